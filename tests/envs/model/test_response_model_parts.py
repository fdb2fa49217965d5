"""The response model's modules: the config needs no torch; io and net pieces behave on their own."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from pushrl.envs.model import response_config, response_model
from pushrl.envs.model.response_io import first_difference, plain_json
from pushrl.envs.model.response_net import Head


def test_config_is_one_class_on_both_paths_and_imports_no_torch():
    assert response_model.ResponseModelConfig is response_config.ResponseModelConfig
    code = "import sys, pushrl.envs.model.response_config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # the Hydra schema (experiments/config.py) composes without torch


def test_config_turns_a_list_chain_into_a_tuple():
    assert response_config.ResponseModelConfig(reward_chain=["click", "conversion"]).reward_chain == ("click", "conversion")


@pytest.mark.parametrize("expected, actual, where", [
    ({"a": 1, "b": {"c": [1, 2]}}, {"a": 1, "b": {"c": [1, 2]}}, None),
    ({"a": 1, "b": {"c": [1, 2]}}, {"a": 1, "b": {"c": [1, 3]}}, "b.c[1]"),
    ({"a": [1]}, {"a": [1, 2]}, "a (length 1 vs 2)"),
    ({"a": 1}, {"b": 1}, "a"),
    (1, 2, "<root>"),
])
def test_first_difference_names_the_path(expected, actual, where):
    assert first_difference(expected, actual) == where


def test_plain_json_unwraps_numpy_scalars():
    assert plain_json({"n": np.int64(3), "x": [np.float32(0.5)]}) == {"n": 3, "x": [0.5]}


def test_an_untrained_head_is_the_base_rate():
    head = Head(d=3, q=2, n_actions=4, n_positions=1, k=2, link="logit", clip=5.0)
    head.init_(0.01, torch.Generator().manual_seed(0), offset=-1.0)
    x, z, seen = torch.randn(5, 3), torch.randn(4, 2), torch.ones(4)
    eta = head.all_actions(x, torch.zeros(5, dtype=torch.int64), torch.zeros(5), z, seen)
    assert eta.shape == (5, 4) and torch.allclose(eta, torch.full((5, 4), -1.0))
