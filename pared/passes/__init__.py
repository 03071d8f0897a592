"""Graph-to-graph passes: each a frozen dataclass of options with a registered name."""

from .base import Pass, PassOptionError, available_passes, coerce_option, get_pass, register_pass
from .cleanup import CSE, DCE, Canonicalize, Fold
from .context import PassContext, Report, ReportRow
from .rewrite import Replacement, RewriteError, RewriteView, RuleTable, remove_dead_eqns, rewrite

__all__ = [
    "CSE", "Canonicalize", "DCE", "Fold", "Pass", "PassContext", "PassOptionError", "Replacement",
    "Report", "ReportRow", "RewriteError", "RewriteView", "RuleTable", "available_passes",
    "coerce_option", "get_pass", "register_pass", "remove_dead_eqns", "rewrite",
]
