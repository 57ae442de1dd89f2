"""Who may do what: providers, links, shares, sensitivity rules, and the one decision."""

from consent.decision import AccountRef, Action, Decision, Principal, decide
from consent.providers import ConsentError

__all__ = ["AccountRef", "Action", "Decision", "Principal", "decide", "ConsentError"]
