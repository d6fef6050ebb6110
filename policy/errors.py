"""Errors of the policy package: one rooted tree, each class with a machine-readable ``code``.

::

    PolicyError                  policy_error      root: catch this to catch everything below
    ├── PolicyInvalid            policy_invalid    a policy document has problems (``.problems``)
    ├── AnalysisError            analysis_error    reserved for the statement analyzer
    │   └── BudgetExhausted      analysis_budget   analysis ran out of its time budget
    └── MaskError                mask_invalid      a mask cannot be built (unknown kind, short token key)

Refusing a statement is a decision, not an error: the engine returns ``Deny`` values. These
exceptions are for faults: a policy that cannot be used, an analyzer that cannot go on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a policy: where it is (file, line, dotted key) and what is wrong.

    ``line`` is 1-based, or None when the position is not known (a policy built in code).
    ``key`` is the dotted path of YAML keys, list items as ``[i]`` (``roles.maintenance.from[1]``);
    it is empty for problems with the document as a whole.
    """

    source: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class PolicyError(Exception):
    """Root of the policy package's exceptions."""

    code = "policy_error"


class PolicyInvalid(PolicyError):
    """A policy document has one or more problems; ``problems`` lists every one, in file order.

    The message is the problems one per line, as ``file:line: key: message``.
    """

    code = "policy_invalid"

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class AnalysisError(PolicyError):
    """The analyzer could not establish what a statement does (reserved for policy.analyze)."""

    code = "analysis_error"


class BudgetExhausted(AnalysisError):
    """Analysis ran past its deadline; the statements not yet established are refused (fail closed)."""

    code = "analysis_budget"


class MaskError(PolicyError):
    """A mask cannot be built: an unknown kind, or a token key too short to keep tokens secret.

    Raised when a masker is made, never while cells are masked: masking itself never fails.
    """

    code = "mask_invalid"
