"""Auth against real etcd 3.5: users, roles, permissions, enabling auth, tokens and refresh."""

from __future__ import annotations

import pytest

from petcd import errors
from petcd.client import AsyncClient, Client
from tests.support import EtcdProcess

WAIT_S = 10.0


def _set_up_users(root: Client) -> None:
    with pytest.raises(errors.RootUserNotExistError):
        root.auth_enable()
    root.user_add("root", "rootpw")
    with pytest.raises(errors.RootRoleNotExistError):
        root.auth_enable()
    root.role_add("root")
    root.user_grant_role("root", "root")
    root.role_add("reader")
    root.role_grant_permission("reader", "read", "/app/", prefix=True)
    root.role_grant_permission("reader", "readwrite", "/app/mine")
    root.user_add("alice", "wrong-for-now")
    root.user_change_password("alice", "alicepw")
    root.user_grant_role("alice", "reader")
    with pytest.raises(errors.UserAlreadyExistError):
        root.user_add("alice", "again")
    with pytest.raises(errors.RoleNotFoundError):
        root.role_get("nobody")
    with pytest.raises(errors.UserNotFoundError):
        root.user_get("nobody")
    assert sorted(root.user_list().users) == ["alice", "root"]
    assert sorted(root.role_list().roles) == ["reader", "root"]
    assert list(root.user_get("alice").roles) == ["reader"]
    perms = root.role_get("reader").perm
    assert sorted((p.key, p.range_end, p.permType) for p in perms) == [
        (b"/app/", b"/app0", 0),
        (b"/app/mine", b"", 2),
    ]


def test_auth_lifecycle_permissions_and_token_refresh(etcd35: EtcdProcess) -> None:
    with Client([etcd35.endpoint]) as anonymous:
        anonymous.put("/app/x", "1")
        _set_up_users(anonymous)
        assert not anonymous.auth_status().enabled
        anonymous.auth_enable()
        with pytest.raises(errors.UserEmptyError):
            anonymous.get("/app/x")
        with pytest.raises(errors.AuthFailedError):
            anonymous.authenticate("alice", "bad")
        assert anonymous.authenticate("alice", "alicepw").token
    with Client([etcd35.endpoint], username="alice", password="alicepw") as alice:
        assert alice.get("/app/x").kvs[0].value == b"1"
        alice.put("/app/mine", "ok")
        with pytest.raises(errors.PermissionDeniedError):
            alice.put("/app/x", "2")
        with pytest.raises(errors.PermissionDeniedError):
            alice.get("/elsewhere")
        with pytest.raises(errors.PermissionDeniedError):
            alice.watch("/elsewhere")
        with alice.watch("/app/", prefix=True) as watch:
            alice.put("/app/mine", "again")
            response = watch.get(timeout=WAIT_S)
            assert response is not None and response.events[0].kv.value == b"again"
        # simple tokens live in the server's memory: after a restart alice's token is invalid,
        # and the client authenticates again by itself
        etcd35.restart()
        assert alice.get("/app/mine").kvs[0].value == b"again"
    with Client([etcd35.endpoint], username="root", password="rootpw") as root:
        assert root.auth_status().enabled
        root.user_revoke_role("alice", "reader")
        with pytest.raises(errors.RoleNotGrantedError):
            root.user_revoke_role("alice", "reader")
        root.role_revoke_permission("reader", "/app/mine")
        with pytest.raises(errors.PermissionNotGrantedError):
            root.role_revoke_permission("reader", "/app/mine")
        root.user_delete("alice")
        root.role_delete("reader")
        with pytest.raises(errors.InvalidAuthMgmtError):
            root.user_delete("root")
        root.auth_disable()
    with Client([etcd35.endpoint]) as anonymous:
        assert anonymous.get("/app/x").count == 1


async def test_async_auth(etcd35: EtcdProcess) -> None:
    async with AsyncClient([etcd35.endpoint]) as admin:
        await admin.user_add("root", "pw")
        await admin.role_add("root")
        await admin.user_grant_role("root", "root")
        await admin.auth_enable()
        with pytest.raises(errors.UserEmptyError):
            await admin.put("k", "v")
    async with AsyncClient([etcd35.endpoint], username="root", password="pw") as root:
        await root.put("k", "v")
        assert (await root.get("k")).kvs[0].value == b"v"
        watch = await root.watch("k")
        await watch.cancel()
        etcd35.restart()
        assert (await root.get("k")).count == 1  # re-authenticated after the token was lost
        await root.auth_disable()
