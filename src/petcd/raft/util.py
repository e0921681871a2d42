"""Readable one-line descriptions of raft messages, entries and states (tests and traces)."""

from __future__ import annotations

from petcd.pb import raft_pb2 as pb
from petcd.pb.raft_pb2 import ConfState, Entry, HardState, Message, Snapshot

_MSG_NAMES = {
    pb.MSG_HUP: "MsgHup",
    pb.MSG_BEAT: "MsgBeat",
    pb.MSG_PROP: "MsgProp",
    pb.MSG_APP: "MsgApp",
    pb.MSG_APP_RESP: "MsgAppResp",
    pb.MSG_VOTE: "MsgVote",
    pb.MSG_VOTE_RESP: "MsgVoteResp",
    pb.MSG_SNAP: "MsgSnap",
    pb.MSG_HEARTBEAT: "MsgHeartbeat",
    pb.MSG_HEARTBEAT_RESP: "MsgHeartbeatResp",
    pb.MSG_UNREACHABLE: "MsgUnreachable",
    pb.MSG_SNAP_STATUS: "MsgSnapStatus",
    pb.MSG_CHECK_QUORUM: "MsgCheckQuorum",
    pb.MSG_TRANSFER_LEADER: "MsgTransferLeader",
    pb.MSG_TIMEOUT_NOW: "MsgTimeoutNow",
    pb.MSG_READ_INDEX: "MsgReadIndex",
    pb.MSG_READ_INDEX_RESP: "MsgReadIndexResp",
    pb.MSG_PRE_VOTE: "MsgPreVote",
    pb.MSG_PRE_VOTE_RESP: "MsgPreVoteResp",
}
_ENTRY_NAMES = {
    pb.ENTRY_NORMAL: "EntryNormal",
    pb.ENTRY_CONF_CHANGE: "EntryConfChange",
    pb.ENTRY_CONF_CHANGE_V2: "EntryConfChangeV2",
}


def describe_entry(e: Entry) -> str:
    data = e.data.decode(errors="replace") if e.type == pb.ENTRY_NORMAL else describe_conf(e)
    return (
        f'{e.term}/{e.index} {_ENTRY_NAMES.get(e.type, str(e.type))} "{data}"'
        if data
        else (f"{e.term}/{e.index} {_ENTRY_NAMES.get(e.type, str(e.type))}")
    )


def describe_conf(e: Entry) -> str:
    names = {0: "v", 1: "r", 2: "u", 3: "l"}
    try:
        if e.type == pb.ENTRY_CONF_CHANGE:
            cc = pb.ConfChange.FromString(e.data)
            return f"{names.get(cc.type, '?')}{cc.node_id}"
        v2 = pb.ConfChangeV2.FromString(e.data)
    except Exception:  # undecodable data is shown raw
        return repr(e.data)
    return " ".join(f"{names.get(c.type, '?')}{c.node_id}" for c in v2.changes)


def describe_entries(ents: list[Entry]) -> str:
    return "[" + ", ".join(describe_entry(e) for e in ents) + "]"


def describe_message(m: Message) -> str:
    s = f"{m.from_}->{m.to} {_MSG_NAMES.get(m.type, str(m.type))} Term:{m.term}"
    s += f" Log:{m.log_term}/{m.index}"
    if m.reject:
        s += f" Rejected (Hint: {m.reject_hint})"
    if m.commit:
        s += f" Commit:{m.commit}"
    if m.entries:
        s += " Entries:" + describe_entries(list(m.entries))
    if m.context:
        s += f" Context:{m.context.decode(errors='replace')}"
    if m.HasField("snapshot") and m.snapshot.metadata.index:
        s += " Snapshot: " + describe_snapshot(m.snapshot)
    return s


def describe_snapshot(snap: Snapshot) -> str:
    md = snap.metadata
    return f"Index:{md.index} Term:{md.term} ConfState:{describe_conf_state(md.conf_state)}"


def describe_conf_state(cs: ConfState) -> str:
    s = "Voters:" + str(list(cs.voters))
    if cs.voters_outgoing:
        s += " VotersOutgoing:" + str(list(cs.voters_outgoing))
    if cs.learners:
        s += " Learners:" + str(list(cs.learners))
    if cs.learners_next:
        s += " LearnersNext:" + str(list(cs.learners_next))
    if cs.auto_leave:
        s += " AutoLeave:true"
    return s


def describe_hard_state(hs: HardState) -> str:
    return f"Term:{hs.term} Vote:{hs.vote} Commit:{hs.commit}"
