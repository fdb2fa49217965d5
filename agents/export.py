"""Export a torch scorer to the serving artifact (ONNX + manifest), checked for parity first.

`export_scorer` takes any `torch.nn.Module` mapping encoded contexts
(n, d) float32 to (n, A) scores or probabilities, exports it with the
torch.export-based ONNX exporter (`dynamo=True`, the supported path in
torch 2.13; the legacy TorchScript exporter is deprecated there) with a
dynamic batch axis, compares onnxruntime against torch eager on 10,000
random encoded contexts, and writes the artifact only if the largest absolute
difference is within `parity_atol`. The agents' export adapters build a
module and call this function.

With `catalogue` (a feature-based policy), the module maps (contexts (n, d),
action_features (A, m)) to (n, A); the ONNX model gets a second input
"action_features" whose action axis is dynamic, and parity is checked on random
contexts against the real catalogue and against random catalogues of other sizes.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper
import onnxruntime as ort
import torch

from pushrl.envs.data.features import ContextEncoder
from pushrl.policies.artifact import (
    ACTION_FEATURES_INPUT,
    ActionId,
    BusinessRules,
    CatalogueSpec,
    Exploration,
    Manifest,
    write_artifact,
)

INPUT_NAME = "contexts"
METADATA_KEYS = ("data_fingerprint", "training_config", "metrics")


class ExportError(ValueError):
    """The exported model does not reproduce the torch module (or is not a valid policy)."""


@dataclass(frozen=True)
class ParityReport:
    """Result of comparing onnxruntime with torch eager on the same random contexts."""

    n_rows: int
    max_abs_diff: float
    atol: float

    @property
    def ok(self) -> bool:
        return bool(self.max_abs_diff <= self.atol)


class LinearUCBScorer(torch.nn.Module):
    """Per-action optimistic score theta_a^T x + alpha * sqrt(x^T A_a^{-1} x), from numpy parameters.

    theta: (A, d) ridge estimates; a_inv: (A, d, d) inverse design matrices; alpha >= 0.
    """

    def __init__(self, theta: np.ndarray, a_inv: np.ndarray, alpha: float) -> None:
        super().__init__()
        theta, a_inv = np.asarray(theta, np.float32), np.asarray(a_inv, np.float32)
        if theta.ndim != 2 or a_inv.shape != (theta.shape[0], theta.shape[1], theta.shape[1]):
            raise ValueError(f"theta must be (A, d) and a_inv (A, d, d); got {theta.shape} and {a_inv.shape}")
        self.register_buffer("theta", torch.from_numpy(theta.copy()))
        self.register_buffer("a_inv", torch.from_numpy(a_inv.copy()))
        self.alpha = float(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x @ self.theta.T
        quad = torch.einsum("nd,ade,ne->na", x, self.a_inv, x)
        return mean + self.alpha * torch.sqrt(torch.clamp(quad, min=0.0))


def export_scorer(
    module: torch.nn.Module,
    encoder: ContextEncoder,
    action_ids: Sequence[ActionId],
    folder: str | os.PathLike[str],
    *,
    exploration: Exploration | Mapping[str, Any] | None = None,
    output: str = "scores",
    slate_size: int = 1,
    no_push_action: ActionId | None = None,
    business_rules: BusinessRules | None = None,
    policy_kind: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    parity_rows: int = 10_000,
    parity_atol: float = 1e-5,
    seed: int = 0,
    catalogue: CatalogueSpec | None = None,
) -> Path:
    """Export `module` ((n, d) float32 -> (n, A)) and write the artifact at `folder`; returns the folder.

    catalogue: for a feature-based module ((n, d), (A, m) -> (n, A)): the promotion-feature encoder and
        raw features of `action_ids` (see the module docstring).

    metadata: optional `data_fingerprint` (str), `training_config` and `metrics`
        (JSON-able dicts); other keys are refused.
    Raises ExportError (nothing is written) when onnxruntime and torch differ
    by more than `parity_atol` on `parity_rows` random encoded contexts, or
    when an "probabilities" output is not a distribution.
    """
    meta = dict(metadata or {})
    unknown = sorted(set(meta) - set(METADATA_KEYS))
    if unknown:
        raise ValueError(f"metadata has unknown key(s) {unknown}; allowed: {list(METADATA_KEYS)}")
    if isinstance(exploration, Mapping):
        exploration = Exploration(**exploration)
    manifest = Manifest(
        policy_kind=policy_kind or type(module).__name__.lower(),
        encoder=encoder,
        action_ids=tuple(action_ids),
        output=output,
        exploration=exploration or Exploration(),
        slate_size=slate_size,
        no_push_action=no_push_action,
        business_rules=business_rules or BusinessRules(),
        data_fingerprint=meta.get("data_fingerprint"),
        training_config=meta.get("training_config", {}),
        metrics=meta.get("metrics", {}),
        catalogue=catalogue,
    )
    rng = np.random.default_rng(seed)
    contexts = random_contexts(encoder, parity_rows, rng)
    if catalogue is None:
        onnx_bytes = to_onnx(module, encoder.n_features)
        report, ort_out = check_parity(module, onnx_bytes, contexts, parity_atol)
    else:
        z = catalogue_matrix(catalogue)
        onnx_bytes = to_onnx(module, encoder.n_features, z.shape[1])
        report, ort_out = check_parity(module, onnx_bytes, contexts, parity_atol, z)
        for size in (1, z.shape[0] + 7):  # other catalogues: the action axis is dynamic
            other, _ = check_parity(module, onnx_bytes, contexts[:1000], parity_atol,
                                    random_contexts(catalogue.encoder, size, rng))
            report = report if report.max_abs_diff >= other.max_abs_diff else other
    if ort_out.shape[1] != manifest.n_actions:
        raise ExportError(f"the module scores {ort_out.shape[1]} actions but action_ids has {manifest.n_actions}")
    if not report.ok:
        raise ExportError(f"ONNX and torch disagree on {report.n_rows} random contexts: max |diff| "
                          f"{report.max_abs_diff:.3g} > {parity_atol:g}; nothing was written")
    if output == "probabilities":
        sums = ort_out.astype(np.float64).sum(axis=1)
        if (ort_out < 0).any() or np.abs(sums - 1).max() > 1e-4:
            raise ExportError(f"output='probabilities' but rows are not distributions (min {ort_out.min():.3g}, "
                              f"row sums in [{sums.min():.6f}, {sums.max():.6f}]); export scores instead")
    return write_artifact(folder, onnx_bytes, manifest)


def catalogue_matrix(catalogue: CatalogueSpec) -> np.ndarray:
    """(A, m) float32 encoded action features of a catalogue (numpy only, as the serving runtime does it)."""
    import pandas as pd

    frame = pd.DataFrame(list(catalogue.features), columns=catalogue.encoder.input_fields)
    return catalogue.encoder.transform(frame).astype(np.float32)


def to_onnx(module: torch.nn.Module, n_features: int, n_action_features: int | None = None) -> bytes:
    """ONNX bytes of `module` with input "contexts" (batch, n_features) and a dynamic batch axis.

    With `n_action_features`, a second input "action_features" (actions, n_action_features) with a
    dynamic action axis (feature-based policies).
    """
    was_training = module.training
    module.eval()
    example: tuple[torch.Tensor, ...] = (torch.zeros(2, n_features, dtype=torch.float32),)
    names, dims = [INPUT_NAME], ({0: torch.export.Dim("batch")},)
    if n_action_features is not None:
        example += (torch.zeros(3, n_action_features, dtype=torch.float32),)
        names.append(ACTION_FEATURES_INPUT)
        dims += ({0: torch.export.Dim("actions")},)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter deprecation chatter, not ours to fix
            _quiet_exporter_logs()
            program = torch.onnx.export(
                module,
                example,
                dynamo=True,
                input_names=names,
                output_names=["output"],
                dynamic_shapes=dims,
                report=False,
                verbose=False,
            )
        if program is None:
            raise ExportError("torch.onnx.export returned no program")
        return program.model_proto.SerializeToString()
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed for {type(module).__name__}: {exc}") from exc
    finally:
        module.train(was_training)


def linear_onnx(weight: np.ndarray, bias: np.ndarray | None = None, *, softmax: bool = False) -> bytes:
    """ONNX bytes of x @ weight.T + bias, optionally softmax over actions, built with onnx.helper (no torch).

    weight: (A, d); bias: (A,). Input "contexts" (batch, d) float32 -> (batch, A).
    """
    w = np.asarray(weight, np.float32)
    if w.ndim != 2:
        raise ValueError(f"weight must be (n_actions, n_features), got shape {w.shape}")
    b = np.zeros(w.shape[0], np.float32) if bias is None else np.asarray(bias, np.float32)
    if b.shape != (w.shape[0],):
        raise ValueError(f"bias must have shape ({w.shape[0]},), got {b.shape}")
    nodes = [oh.make_node("MatMul", [INPUT_NAME, "w"], ["xw"]), oh.make_node("Add", ["xw", "b"], ["scores"])]
    if softmax:
        nodes.append(oh.make_node("Softmax", ["scores"], ["probabilities"], axis=1))
    graph = oh.make_graph(
        nodes,
        "linear_scorer",
        [oh.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, ["batch", w.shape[1]])],
        [oh.make_tensor_value_info(nodes[-1].output[0], onnx.TensorProto.FLOAT, ["batch", w.shape[0]])],
        [onnx.numpy_helper.from_array(np.ascontiguousarray(w.T), "w"), onnx.numpy_helper.from_array(b, "b")],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def random_contexts(encoder: ContextEncoder, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, d) float32 encoded contexts: standard-normal numerics (a few extreme), valid one-hot blocks."""
    n_num = len(encoder.numeric)
    out = np.zeros((n, encoder.n_features), np.float32)
    num = rng.standard_normal((n, n_num))
    num[: n // 20] *= 10.0  # some far-from-training values
    out[:, :n_num] = num
    col = n_num
    for c in encoder.categorical:
        width = len(encoder.vocabularies[c]) + 1
        out[np.arange(n), col + rng.integers(0, width, n)] = 1.0
        col += width
    return out


def check_parity(
    module: torch.nn.Module, onnx_bytes: bytes, contexts: np.ndarray, atol: float = 1e-5,
    action_features: np.ndarray | None = None,
) -> tuple[ParityReport, np.ndarray]:
    """Run torch eager and onnxruntime on the same float32 inputs; return the report and ORT's output."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    inputs = [np.ascontiguousarray(contexts, dtype=np.float32)]
    if action_features is not None:
        inputs.append(np.ascontiguousarray(action_features, dtype=np.float32))
    feeds = {i.name: v for i, v in zip(session.get_inputs(), inputs, strict=True)}
    ort_out = session.run(None, feeds)[0]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            torch_out = module(*map(torch.from_numpy, inputs)).detach().cpu().numpy()
    finally:
        module.train(was_training)
    if ort_out.shape != torch_out.shape:
        raise ExportError(f"ONNX output shape {ort_out.shape} != torch output shape {torch_out.shape}")
    if not np.isfinite(torch_out).all():
        raise ExportError("the torch module returns NaN or inf on random contexts")
    diff = float(np.max(np.abs(ort_out.astype(np.float64) - torch_out.astype(np.float64)), initial=0.0))
    if not np.isfinite(diff):
        diff = float("inf")
    return ParityReport(len(inputs[0]), diff, atol), ort_out


def _quiet_exporter_logs() -> None:
    """The exporter logs one warning per missing torchvision op; they do not concern pushrl."""
    for name in ("torch.onnx._internal.exporter._registration", "torch.onnx", "onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.ERROR)
