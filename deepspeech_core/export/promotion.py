"""Champion/challenger: does a newly trained model replace the one in use?

The new model (challenger) replaces `export/current` (champion) only when its test WER
is no worse than the champion's on the same test clips with the same decoder, both
evaluated in the same run. Otherwise the new export is kept beside it, unpromoted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deepspeech_core.export.store import exported_checkpoint
from deepspeech_core.manifests import EvaluationManifest


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def is_already_current(current: Path | None, challenger: EvaluationManifest | None) -> bool:
    """Was the current export made from the very checkpoint just evaluated?

    Then there is nothing new to export: a rerun of a finished training must not add an
    identical version (nor compare a model with itself).
    """
    if current is None or challenger is None:
        return False
    return exported_checkpoint(current) == str(challenger.checkpoint)


def decide(
    challenger: EvaluationManifest | None,
    champion: EvaluationManifest | None,
    has_current: bool = True,
) -> Decision:
    """`champion` is the current model's evaluation (None when it could not be evaluated)."""
    if not has_current:
        return Decision(True, "there is no current model yet")
    if challenger is None or champion is None:
        return Decision(
            False,
            "there is no test split to compare it with the current model "
            "(`deepspeech-flow promote` makes it current by hand)",
        )
    if challenger.samples != champion.samples:
        return Decision(False, "the two evaluations did not cover the same test clips")
    if challenger.wer <= champion.wer:
        return Decision(
            True,
            f"its test WER {challenger.wer:.4f} is no worse than the current model's "
            f"{champion.wer:.4f} on the same {challenger.samples} clips",
        )
    return Decision(
        False,
        f"its test WER {challenger.wer:.4f} is worse than the current model's "
        f"{champion.wer:.4f} on the same {challenger.samples} clips",
    )


def comparison_markdown(
    challenger: EvaluationManifest | None,
    champion: EvaluationManifest | None,
    decision: Decision,
    new_version: str,
    current_version: str | None,
) -> str:
    """The promotion decision and the two models' figures side by side."""
    verdict = "promoted to `current`" if decision.promote else "kept, **not promoted**"
    lines = [f"**New model {new_version}: {verdict}**, because {decision.reason}.", ""]
    lines += ["| model | WER | CER | loss | clips | checkpoint |", "|---|---:|---:|---:|---:|---|"]
    rows = ((f"new ({new_version})", challenger), (f"current ({current_version})", champion))
    for name, m in rows:
        if m is not None:
            lines.append(
                f"| {name} | {m.wer:.4f} | {m.cer:.4f} | {m.loss:.3f} | {m.samples} | "
                f"`{m.checkpoint}` |"
            )
    return "\n".join(lines)
