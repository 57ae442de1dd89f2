"""Who may do what: providers, links, shares, sensitivity rules, and the one decision (``consent.decision``)."""

from consent.decision import (AccountRef, Action, Decision, Principal, Reason, decide, decide_association, in_force,
                              require, study_filter)
from consent.errors import AlreadyDone, ConsentError, NotPermitted, NotVisible, UnknownParty

__all__ = ["AccountRef", "Action", "Decision", "Principal", "Reason", "decide", "decide_association", "in_force",
           "require", "study_filter", "AlreadyDone", "ConsentError", "NotPermitted", "NotVisible", "UnknownParty"]
