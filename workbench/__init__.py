"""workbench: where does a trait that a student inherited from a teacher's clean-looking data live?

The public API. Sources give models and data (`workbench.organism` is the built-in one; local
Hugging Face directories load through `Lineage.from_hf_dirs`). Analyses take the `Lineage` first
(named models with roles and parents), then what they read, then their config, and return a
result with `save`, `load`, `figures` and `summary_rows`; `write_report` turns results into
`report.json` and HTML:

    weight_deltas(lineage, config)                          the weights only
    delta_patching(lineage, trait, config)                  a Trait: the prompts the trait is scored on
    activation_patching(lineage, trait, config)
    compare_activations(lineage, store, config, trait=...)  an ActivationStore (capture_activations)
    fit_probes(lineage, inputs, config, activations)        Inputs (+ an ActivationReader to share reads)
    trait_directions(lineage, inputs, prompts, config, activations)
    run_alignment(lineage, inputs, config, trait)           the trait gradient needs the Trait
    run_screening(lineage, inputs, trait, retrain, config)  retrain: kept rows -> a retrained student
    rank_rows(lineage, inputs, trait, config)               no retraining: rows ranked, kept and dropped
    steering_vectors(lineage, trait, config, inputs=None)   one steering vector: sufficiency and necessity
    run_channels(lineage, inputs, trait, source, config, base_rows, reference=)  which channel: edit, retrain
    run_leaderboard(lineage, inputs, base_rows, trait, source, config, reference=)  detectors: AUROC + retrains

>>> import workbench
>>> callable(workbench.weight_deltas) and callable(workbench.compare_activations)
True

Activation comparison is `compare_activations` and activation capture `capture_activations`:
`workbench.compare` is the command-line entry point `python -m workbench.compare`, and
`workbench.capture` the package that holds capture, so the functions carry names of their own
(likewise `steering_vectors`: `workbench.steering` is `python -m workbench.steering`).
"""

from workbench.analyses.alignment import AlignmentConfig, AlignmentResult, detection_over_seeds, run_alignment
from workbench.analyses.compare import ActivationComparison, CompareConfig, SeedAggregate, aggregate_seeds
from workbench.analyses.compare import compare as compare_activations
from workbench.analyses.data_probes import ProbesConfig, fit_probes
from workbench.analyses.directions import DirectionResult, DirectionsConfig, trait_directions
from workbench.analyses.first_order import PredictionRow, first_order_prediction
from workbench.analyses.gradients import trait_gradient
from workbench.analyses.patching import (
    ActivationPatchingResult,
    DeltaPatchingResult,
    PatchConfig,
    activation_patching,
    delta_patching,
)
from workbench.analyses.probe_result import ProbeResult
from workbench.analyses.probes import ProbeConfig
from workbench.analyses.screening import ScreeningConfig, ScreeningResult, ScreeningRow, run_screening, screening_over_seeds
from workbench.analyses.screening_rank import RankConfig, ScreeningRanking, rank_rows
from workbench.analyses.channels import (ChannelConfig, ChannelResult, ChannelSource, Retraining, channels_over_seeds,
                                         run_channels)
from workbench.analyses.detectors import DetectorInputs, run_detectors
from workbench.analyses.leaderboard import LeaderboardConfig, LeaderboardResult, leaderboard_over_seeds, run_leaderboard
from workbench.analyses.steering import SteeringConfig
from workbench.analyses.steering import steering as steering_vectors
from workbench.analyses.steering_result import SteeringResult
from workbench.analyses.weights import WeightConfig, WeightDeltaResult, weight_deltas
from workbench.capture.cache import ActivationReader, ContrastPrompts, contrast_prompts, read_contrast_prompts
from workbench.capture.capture import capture as capture_activations
from workbench.capture.hooks import patching_hooks, probe_hooks, residual_hooks, resolve_hooks
from workbench.capture.store import ActivationStore
from workbench.core.errors import (
    ArtifactError,
    ChecksumError,
    ConfigError,
    DataError,
    IncompatibleModelsError,
    NumericsError,
    WorkbenchError,
)
from workbench.core.hf_parity import ParityError, assert_hook_parity, check_hf_parity
from workbench.core.hf_trait import hf_trait, hf_traits, sampled_answer_rate
from workbench.core.inputs import Inputs, distillation_inputs, read_jsonl, write_jsonl
from workbench.core.lineage import Lineage
from workbench.engines.alignment_model import AlignmentModel
from workbench.engines.objective import Objective
from workbench.engines.optimizers import OPTIMIZERS, first_step
from workbench.core.prompted import read_system_prompt
from workbench.capture.prompted import prompted_activations
from workbench.core.models import boot_native, load_model, save_model
from workbench.core.toy_hf import ToyLineage, ToySpec, write_toy_lineage
from workbench.report import read_report, write_report
from workbench.results.base import ResultBase
from workbench.results.figures import write_figures, write_result_figures
from workbench.results.rows import SummaryRow
from workbench.results.seeds import SeedStats, over_seeds
from workbench.trait import Trait, TraitScore, trait_matrix, wilson_interval

__all__ = [
    # data and models
    "Inputs", "Lineage", "Trait", "TraitScore", "ContrastPrompts", "distillation_inputs", "read_jsonl", "write_jsonl",
    "contrast_prompts", "read_contrast_prompts", "boot_native", "load_model", "save_model", "trait_matrix",
    "wilson_interval", "hf_trait", "hf_traits", "sampled_answer_rate", "write_toy_lineage", "ToySpec", "ToyLineage",
    "read_system_prompt",
    # activations
    "capture_activations", "ActivationStore", "ActivationReader", "prompted_activations", "probe_hooks",
    "residual_hooks", "patching_hooks",
    "resolve_hooks",
    "check_hf_parity", "assert_hook_parity", "ParityError",
    # analyses: analysis(lineage, inputs, config) -> result, with a Trait where they score one
    "compare_activations", "CompareConfig", "ActivationComparison", "SeedAggregate", "aggregate_seeds",
    "weight_deltas", "WeightConfig", "WeightDeltaResult",
    "delta_patching", "activation_patching", "PatchConfig", "DeltaPatchingResult", "ActivationPatchingResult",
    "fit_probes", "ProbesConfig", "ProbeConfig", "ProbeResult",
    "trait_directions", "DirectionsConfig", "DirectionResult",
    "run_alignment", "AlignmentConfig", "AlignmentResult", "detection_over_seeds", "trait_gradient",
    "first_order_prediction", "PredictionRow", "AlignmentModel", "Objective", "OPTIMIZERS", "first_step",
    "run_screening", "ScreeningConfig", "ScreeningResult", "ScreeningRow", "screening_over_seeds",
    "rank_rows", "RankConfig", "ScreeningRanking",
    "steering_vectors", "SteeringConfig", "SteeringResult",
    "run_channels", "ChannelConfig", "ChannelResult", "ChannelSource", "Retraining", "channels_over_seeds",
    "run_leaderboard", "LeaderboardConfig", "LeaderboardResult", "leaderboard_over_seeds", "run_detectors",
    "DetectorInputs",
    # results and report
    "ResultBase", "SummaryRow", "SeedStats", "over_seeds", "write_figures", "write_result_figures", "write_report",
    "read_report",
    # errors
    "WorkbenchError", "ConfigError", "DataError", "ArtifactError", "ChecksumError", "IncompatibleModelsError",
    "NumericsError",
]
