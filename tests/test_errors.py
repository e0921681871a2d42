from __future__ import annotations

from petcd import errors


def test_messages_are_etcds() -> None:
    assert errors.CompactedError().message == (
        "etcdserver: mvcc: required revision has been compacted"
    )
    assert errors.CompactedError.code == errors.GrpcCode.OUT_OF_RANGE
    assert errors.NoLeaderError.code == errors.GrpcCode.UNAVAILABLE
    assert errors.TooManyRequestsError.code == errors.GrpcCode.UNKNOWN


def test_from_status_maps_back_by_message() -> None:
    err = errors.from_status(5, "etcdserver: requested lease not found")
    assert isinstance(err, errors.LeaseNotFoundError)
    other = errors.from_status(14, "something else")
    assert type(other) is errors.PetcdError
    assert other.code == errors.GrpcCode.UNAVAILABLE
    assert other.message == "something else"


def test_corrupt_file_names_file_and_offset() -> None:
    err = errors.CorruptFileError("/d/wal/0.wal", 4096, "crc mismatch")
    assert "/d/wal/0.wal" in err.message
    assert "4096" in err.message
    assert err.code == errors.GrpcCode.DATA_LOSS
