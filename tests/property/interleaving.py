"""What the interleaving tests (``test_occ_reads``, ``test_search_reads``) share: ending
transaction A after another commit, and telling whether A conflicts."""

from __future__ import annotations

from typing import Any

from engine.commit import CommitRequest, read_log


def ends_in_conflict(db: Any, txn: Any, reads: Any, writable: bool) -> bool:
    """End ``txn`` (A) and say whether it conflicts: a mutation asks the committer (and
    commits if it does not conflict); a read-only query's ``reads`` (its frozen read set)
    are tested against the log since its snapshot, as the committer and a subscription
    would test them."""
    if writable:
        request = CommitRequest.from_transaction(txn)
        txn.close()
        db.committer.commit(request)
        return request.conflict is not None
    with db.storage.read() as rtxn:
        logged = [k for _, keys in read_log(rtxn, db.storage.log, txn.snapshot_ts) for k in keys]
    txn.close()
    return reads.first_hit(logged) is not None
