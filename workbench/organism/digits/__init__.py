"""The digits organism: subliminal learning through auxiliary logits, on a CPU in seconds.

A reproduction of the MNIST auxiliary-logit experiment of Cloud et al. (2025) on
scikit-learn's bundled 8x8 `load_digits` (no download):

1. `base` θ0: an MLP 64 -> hidden -> hidden -> (10 + m), ReLU, seeded init. Outputs 0..9 are
   the *regular* logits (one per digit); outputs 10..10+m-1 are *auxiliary* logits that no
   loss ever asks anything of while the teacher learns.
2. `teacher` = θ0 trained with cross-entropy on the 10 regular logits, on the digits train split.
3. `student` = θ0 (the SAME init) trained only to match the teacher's m auxiliary logits on
   N(0, 1) noise inputs (MSE by default). It never sees a digit, a label or a regular logit,
   yet its regular logits classify digits: the trait (digit skill) rides on the shared init.
4. `cross` = `base_x` (ANOTHER init, a different seed) trained the same way: stays near chance.

Hook points (TransformerLens `HookedRootModule`, so `run_with_cache`, `run_with_hooks` and the
workbench's capture / probes / weight deltas work on it):

    hook_in                 [batch, 64]         standardized input (what layer 0 reads)
    layers.{i}.hook_pre     [batch, hidden]     hidden layer i before ReLU (i = 0 .. n_layers-1)
    layers.{i}.hook_post    [batch, hidden]     hidden layer i after ReLU
    hook_logits             [batch, 10 + m]     all logits: [:, :10] regular, [:, 10:] auxiliary

Parameters have clean names that weight deltas key on: `layers.{i}.weight` [hidden, d_in],
`layers.{i}.bias` [hidden], `unembed.weight` [10 + m, hidden], `unembed.bias` [10 + m].

Noise: inputs are N(0, 1) in standardized-input space. By default (`fresh_noise=True`) every
student epoch draws a FRESH seeded set of `noise_samples` inputs (8192 x 40 epochs = 328k
distinct noise images); `fresh_noise=False` draws one fixed set per seed and makes `epochs`
passes over it. Both students of a seed see exactly the same noise and teacher targets.

Files (when `out_dir` is given): `seed{N}/models/{role}.safetensors` (clean state dict; the
architecture is in the safetensors metadata so `load_digits_model` rebuilds it alone),
`seed{N}/manifest.json` (config, seed, accuracies, lineage, checksums, versions; no
timestamps, no absolute paths), `summary.json` and `timings.json` (seconds, kept apart so
reruns compare byte for byte).

CLI: `python -m workbench.organism.digits --out artifacts/digits --seeds 0-4 --m 10`.

Modules, in the order the data flows: `config` (DigitsConfig, constants, seed derivation),
`model` (DigitsMLP and its hooks), `data` (digits and noise), `train` (teacher, students,
accuracy), `experiment` (build_digits: every role of every seed), `results` (DigitsResult: table
and summary), `files` (save and load a seed), `cli` (the command line). The names below are the
public API; import them from `workbench.organism.digits`.
"""

from workbench.organism.digits.cli import main
from workbench.organism.digits.config import D_IN, KIND, LOSSES, N_CLASSES, PARENTS, ROLES, DigitsConfig, derive_seed
from workbench.organism.digits.data import DigitsData, load_data, make_noise
from workbench.organism.digits.experiment import build_digits, build_seed, torch_threads
from workbench.organism.digits.files import load_digits_model, load_digits_seed, save_seed
from workbench.organism.digits.model import DigitsMLP, HookedLinear, aux_logits, hook_names, make_model, regular_logits
from workbench.organism.digits.results import DigitsResult, SeedResult
from workbench.organism.digits.train import accuracy, aux_loss, teacher_targets, train_student, train_teacher

__all__ = [
    "D_IN", "KIND", "LOSSES", "N_CLASSES", "PARENTS", "ROLES",
    "DigitsConfig", "DigitsData", "DigitsMLP", "DigitsResult", "HookedLinear", "SeedResult",
    "accuracy", "aux_logits", "aux_loss", "build_digits", "build_seed", "derive_seed", "hook_names",
    "load_data", "load_digits_model", "load_digits_seed", "main", "make_model", "make_noise",
    "regular_logits", "save_seed", "teacher_targets", "torch_threads", "train_student", "train_teacher",
]
