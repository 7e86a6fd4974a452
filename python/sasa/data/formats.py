"""The dataset formats sasa reads (standard library only: the command line's flags list them without
importing torch)."""

from __future__ import annotations

#: ``sasa.read_dataset`` formats: ours, and the public benchmarks' published layouts.
FORMATS: tuple[str, ...] = ("jsonl", "mm-safetybench", "figstep", "vlguard")
#: The image kinds of an MM-SafetyBench copy.
MMSB_IMAGE_KINDS: tuple[str, ...] = ("SD", "TYPO", "SD_TYPO")
