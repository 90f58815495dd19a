"""What the operator verbs `drain` and `repair` report, as domain values (the servicers
translate them to DrainResponse / RepairResponse)."""

from __future__ import annotations

from dataclasses import dataclass

# Errors a repair report carries at most (one per failed exchange): a node with many
# partitions and a dead peer must not answer with thousands of lines of the same cause.
MAX_REPORTED_ERRORS = 20


@dataclass(frozen=True, slots=True)
class DrainReport:
    hints_delivered: int
    hints_left: int  # not delivered within the drain's timeout
    exiting: bool  # the node stops once this answer is sent


@dataclass(frozen=True, slots=True)
class RepairReport:
    partitions: int  # partitions compared
    exchanges: int  # replica pairs compared (finished or not)
    keys_repaired: int  # records merged on either side
    failed: int  # exchanges that did not finish
    errors: tuple[str, ...] = ()  # why, one per failed exchange (at most MAX_REPORTED_ERRORS)
