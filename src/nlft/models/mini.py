"""``nlft:mini``: the small math model pretrained by ``scripts/pretrain_mini.py``, shipped in the package.

A 4-layer Llama (hidden 256, about 4M parameters) over a byte-level BPE whose digits are single tokens, with a
Llama-3 chat template. It was pretrained on the ``mini-math`` world (``nlft.tasks.mini_math``) under the exact
prompts nlft renders (the ``math`` template set), for three behaviours:

* X_base: question -> solution, trained only part of the way, so that it solves some test problems and gets
  others wrong (its own right and wrong answers are what NLFT trains on);
* X_std: question + standard answer -> a solution that follows the standard answer;
* X_judge: question + a judgment as ``nlft judge --backend arithmetic`` writes it -> a response with the mistake
  the judgment describes.

``nlft:mini`` works wherever a model is accepted (train, sample, judge --backend hf, eval, saliency, studio,
merge); ``MINI_DIR`` is the model folder itself, loaded like any ``from_pretrained`` folder.
"""

from __future__ import annotations

from .. import resource_path

MINI_MODEL = "nlft:mini"
MINI_DIR = resource_path("mini")
PRETRAIN_LOG = "pretrain.json"  # the script's settings and its training log, beside the weights
