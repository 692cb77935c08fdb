"""The PPO agent (CleanRL's Nature CNN with actor and critic heads) and its attention.

What the trainer, ``camal-record``, ``camal-eval`` and scripts share: the network, the action and
attention of V(s) from one forward pass, and the attention alone. The attention method is always
named by the caller (a run stores its own in its arguments; see ``camal_rl.camal.ATTENTION_METHODS``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn

from camal_rl import camal, matmul

# Orthogonal init's default gain for ReLU layers.
SQRT_2 = np.sqrt(2)


def layer_init(layer, std=SQRT_2, bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


# The Nature CNN's three convolutions need at least 36x36 input for a 1x1 feature grid.
MIN_OBS_SIZE = 36


def feature_grid_size(height: int, width: int) -> tuple[int, int]:
    """The last conv layer's grid for an input of ``height`` x ``width`` (8/4, 4/2, 3/1 kernels/strides)."""
    def out(size: int) -> int:
        return ((size - 8) // 4 + 1 - 4) // 2 + 1 - 2

    return out(height), out(width)


class Agent(nn.Module):
    def __init__(self, obs_shape: tuple[int, int, int], num_actions: int):
        super().__init__()
        channels, height, width = obs_shape
        self.conv = nn.Sequential(
            layer_init(nn.Conv2d(channels, 32, 8, stride=4)),
            nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)),
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)),
            nn.ReLU(),  # attention features: the last conv layer's activations
        )
        self.feature_grid = feature_grid_size(height, width)
        flat = 64 * self.feature_grid[0] * self.feature_grid[1]
        self.fc = nn.Sequential(nn.Flatten(), layer_init(nn.Linear(flat, 512)), nn.ReLU())
        self.actor = layer_init(nn.Linear(512, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(512, 1), std=1)
        self.obs_shape = tuple(obs_shape)
        self.num_actions = num_actions
        # channels-last convolutions: faster on CPU (oneDNN), fine on CUDA (docs/performance.md, "Small choices")
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor):
        """uint8 frames -> (action logits, value [B], last-conv features [B, 64, h, w])."""
        return self._pass(x)[:3]

    def forward_with_linear(self, x: torch.Tensor):
        """``forward``'s three outputs and the fc layer the features feed (``camal.LinearAbove``), through
        which the attention of V(s) takes its gradient cheaply: ``camal.attention(..., linear=...)``.
        V(s) = relu(fc output) @ critic weight + bias, so the layer names the critic's weight as its head."""
        logits, value, features, fc_output = self._pass(x)
        return logits, value, features, camal.LinearAbove(fc_output, self.fc[1].weight, self.critic.weight[0])

    def _pass(self, x: torch.Tensor):
        # uint8 -> channels-last first (a quarter of the bytes to move), then scale in place
        features = self.conv(x.contiguous(memory_format=torch.channels_last).float().div_(255.0))
        flatten, linear, relu = self.fc
        fc_output = matmul.linear(flatten(features), linear.weight, linear.bias)  # oneDNN on the CPU
        hidden = relu(fc_output)
        return self.actor(hidden), self.critic(hidden).squeeze(-1), features, fc_output

    def get_value(self, x):
        return self(x)[1]

    def act(self, x, forward: Callable | None = None):
        """The rollout's step: a sampled action, its log-probability and V(s). The same numbers (and
        random draws) as CleanRL's ``Categorical(logits=...).sample()`` and ``log_prob``; here the same
        four ops run without building a distribution or the entropy (docs/performance.md, "Small choices").
        ``forward`` (e.g. a ``GraphedForward``) replaces the network's pass: ``x -> (logits, value)``."""
        logits, value = forward(x) if forward is not None else self(x)[:2]
        log_probs = logits - logits.logsumexp(dim=-1, keepdim=True)  # Categorical's normalisation
        action = sample_one(torch.softmax(log_probs, dim=-1))
        return action.squeeze(1), log_probs.gather(1, action).squeeze(1), value


def sample_one(probs: torch.Tensor) -> torch.Tensor:
    """One category per row of ``probs`` ``[B, n]`` -> ``[B, 1]``: the draw ``torch.multinomial(probs,
    1, True)`` makes, from the same random numbers (its one-sample path is argmax(p / q), q ~ Exp(1)),
    without its validity checks (reductions and two host syncs: half the cost of sampling a small
    batch on a CPU, and no extra sync on a GPU). ``probs`` must be a softmax; a NaN policy shows up
    as a non-finite loss in the update, which stops the run. Tested draw for draw against
    ``torch.multinomial``."""
    return torch.argmax(probs / torch.empty_like(probs).exponential_(), dim=-1, keepdim=True)


class GraphedForward:
    """The rollout's forward pass (``x -> (logits, V(s))``, no gradients) captured in a CUDA graph
    per input shape and replayed: one launch instead of the network's ~20 kernels and their Python.

    The graph reads the agent's parameters in place, so optimiser steps reach it. Sampling stays
    outside (it draws from the RNG stream). Only for CUDA; ``--cuda-graph`` turns it on."""

    def __init__(self, agent: Agent):
        self.agent = agent
        self.graphs: dict[tuple, tuple] = {}

    @torch.no_grad()
    def __call__(self, x: torch.Tensor):
        key = (tuple(x.shape), x.dtype)
        if key not in self.graphs:
            self.graphs[key] = self._capture(x)
        graph, static_input, logits, value = self.graphs[key]
        static_input.copy_(x)
        graph.replay()
        return logits, value.clone()  # the graph overwrites its outputs on the next replay

    def _capture(self, x: torch.Tensor):
        static_input = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        static_input.copy_(x)
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):  # warm-up passes (cuDNN picks its kernels) before capture
            for _ in range(3):
                self.agent(static_input)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits, value, _ = self.agent(static_input)
        return graph, static_input, logits, value


def default_attention(paper_frames: bool) -> str:
    """The paper's Grad-CAM at the paper's frames; LayerCAM at the CPU default (60x80), where the
    4x6 feature grid makes Grad-CAM of V(s) die (all-zero maps, no CAMAL gradient)."""
    return "gradcam" if paper_frames else "layercam"


def act_with_attention(agent: Agent, obs: torch.Tensor, size: tuple[int, int], *, method: str,
                       generator: torch.Generator | None = None):
    """Action, V(s) and the normalised attention of V(s) at ``size`` from one forward pass.

    Actions are drawn from ``generator`` (evaluation, videos), never from the training stream."""

    def forward():
        logits, value, features = agent(obs)
        return features, value, (logits, value)

    (logits, value), maps = camal.inspect_attention(forward, size, method=method)
    action = torch.multinomial(torch.softmax(logits, dim=-1), 1, replacement=True, generator=generator).squeeze(1)
    return action, value, maps


def value_attention(agent: Agent, obs: torch.Tensor, size: tuple[int, int], *, method: str) -> torch.Tensor:
    """The normalised attention of V(s) at ``size``, ``[B, *size]``; no action is drawn."""
    def forward():
        _, value, features = agent(obs)
        return features, value, ()

    return camal.inspect_attention(forward, size, method=method)[1]
