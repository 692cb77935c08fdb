"""The CAMAL loss core (paper sections 3.1-3.2, Eq. 1-4, Proposition 1).

Pure torch: nothing here knows about Doom, PPO or data sets.

Attention is extracted for a whole batch with ONE ``torch.autograd.grad`` of the
summed scalar targets. Because every sample's target depends only on its own
features (no batch mixing; BatchNorm must be in eval mode or the batch statistics
must be detached), the gradient of the sum w.r.t. sample b's features is exactly
the gradient of sample b's own target (Proposition 1), so the maps equal those of
B separate backward passes at the cost of one.

Defined results at the edges (all documented, none produce NaN in the loss):

* empty mask  -> alpha = 0 (there is nothing inside), beta = mean attention; ``camal_loss``
  leaves such samples out by default (``empty_mask="skip"``) or counts their beta.
* full mask   -> beta = 0 (there is nothing outside), the term is -alpha.
* mask of another spatial size than the attention -> the attention is resized
  bilinearly to the mask (the mask is ground truth and stays binary).
* non-binary mask -> ``ValueError``; NaN/inf in the scores -> ``ValueError``.
* an all-zero map stays all zero after ``normalize``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

from camal_rl.matmul import product

# A weighting turns (features A, gradients G), both [B, K, h, w], into the
# unnormalised map [B, h, w]. Each method only says how to weight; the gradient
# itself always comes from one batch-level backward (see ``attention``).
Weighting = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _channel_weighted_mean(weights: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """1/K sum_k w_k A^k, ``[B, h, w]``, for channel weights ``[B, K, ...]``: one batched product, faster
    with its backward than a broadcast product and a mean (docs/performance.md, "Small choices"), and
    reads A once."""
    return torch.einsum("bk,bkhw->bhw", weights.flatten(1), features) / features.shape[1]


def _gradcam_weighting(features: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    # Eq. 3: w_k = spatial mean of dy/dA^k; map = ReLU(1/K sum_k w_k A^k).
    return F.relu(_channel_weighted_mean(grads.mean(dim=(2, 3)), features))


def _gradcam_plus_plus_weighting(features: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    # Chattopadhay et al. 2018, closed form with the exponential-score
    # simplification: a = g^2 / (2 g^2 + sum_ij A g^3), w_k = sum_ij a ReLU(g).
    grads_2 = grads.pow(2)
    grads_3 = grads_2 * grads
    sum_activations = features.sum(dim=(2, 3), keepdim=True)
    denominator = 2 * grads_2 + sum_activations * grads_3
    denominator = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    alphas = grads_2 / denominator
    weights = (alphas * F.relu(grads)).sum(dim=(2, 3))
    return F.relu(_channel_weighted_mean(weights, features))


def _layercam_weighting(features: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    # Jiang et al. 2021: element-wise positive gradients weight each location.
    return F.relu((F.relu(grads) * features).mean(dim=1))


def _signed_gradcam_weighting(features: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    # Eq. 3 without the ReLU. When every channel weight is negative (a critic whose V(s)
    # falls as features rise, common early in Doom's negative-reward scenarios) Grad-CAM is
    # all zero and a loss on it gets no gradient; the signed map still ranks locations.
    return _channel_weighted_mean(grads.mean(dim=(2, 3)), features)


class AttentionMethod(NamedTuple):
    title: str  # how plots and captions name it
    weighting: Weighting
    # True when the weighting reads only each channel's spatial mean gradient (Grad-CAM): it may then
    # be given gradients of shape [B, K, 1, 1], those means, taken cheaply through a linear layer.
    channel_means_only: bool = False


# The registry: adding a method is one weighting function above and one line here.
ATTENTION_METHODS: dict[str, AttentionMethod] = {
    "gradcam": AttentionMethod("Grad-CAM", _gradcam_weighting, channel_means_only=True),
    "signed-gradcam": AttentionMethod("signed Grad-CAM", _signed_gradcam_weighting, channel_means_only=True),
    "gradcam++": AttentionMethod("Grad-CAM++", _gradcam_plus_plus_weighting),
    "layercam": AttentionMethod("LayerCAM", _layercam_weighting),
}
# For typed options (tyro builds the choices of --attention from it).
AttentionName = Literal[tuple(ATTENTION_METHODS)]  # type: ignore[valid-type]


def _check_inputs(features: torch.Tensor, scores: torch.Tensor) -> None:
    if features.dim() != 4:
        raise ValueError(
            f"features must be [B, K, h, w] (channels-first), got shape {tuple(features.shape)}"
        )
    if scores.dim() != 1 or scores.shape[0] != features.shape[0]:
        raise ValueError(
            f"scores must be [B] with B={features.shape[0]} (one scalar target per sample), "
            f"got shape {tuple(scores.shape)}"
        )
    # a host-side check: under torch.compile it would split the graph; the trainer checks its loss instead
    if not torch.compiler.is_compiling() and not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf; attention targets must be finite")


class LinearAbove(NamedTuple):
    """The linear layer the features feed, ``output = flatten(features) @ weight.T + bias`` (a CNN's
    first fully connected layer), with ``output`` [B, N] on the graph of the scores and ``weight``
    [N, K*h*w]. Given to ``attention``, it lets Grad-CAM take its channel weights through the layer.

    ``relu_head`` [N]: when the scores are ``relu(output) @ relu_head + c`` (a critic's linear value
    head on the layer's ReLU), the gradient at the output is ``relu_head * (output > 0)`` in closed
    form, and the full gradient at the features gets a backward of one product instead of two."""

    output: torch.Tensor
    weight: torch.Tensor
    relu_head: torch.Tensor | None = None


class _GatedHeadThroughLinear(torch.autograd.Function):
    """d scores / d flatten(features) = (gate * head) @ weight, ``[B, D]``, for scores = relu(output) @ head
    with gate = (output > 0) [B, N] (ReLU's derivative: constant almost everywhere, so no gradient).

    Autograd's double backward of this product takes two products of the layer's size (one into weight,
    one into the gate-times-head, then summed over the batch). Both come from one: with
    P = gate^T @ grad [N, D], d/d weight = head[:, None] * P and d/d head = each row's dot of weight and P."""

    @staticmethod
    def forward(ctx, head: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(head, gate, weight)
        return product(gate * head, weight)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        head, gate, weight = ctx.saved_tensors
        gated = product(gate.t(), grad)  # [N, D]
        head_grad = torch.linalg.vecdot(weight, gated) if ctx.needs_input_grad[0] else None
        weight_grad = gated.mul_(head[:, None]) if ctx.needs_input_grad[2] else None  # in place: no second [N, D]
        return head_grad, None, weight_grad


def _check_linear(features: torch.Tensor, scores: torch.Tensor, linear: LinearAbove) -> None:
    batch, channels, height, width = features.shape
    weight, output, head = linear.weight, linear.output, linear.relu_head
    if weight.dim() != 2 or weight.shape[1] != channels * height * width or output.shape != (batch, weight.shape[0]):
        raise ValueError(
            f"the linear layer above features {tuple(features.shape)} must have a weight "
            f"[N, {channels * height * width}] "
            f"and an output [{batch}, N]; got weight {tuple(weight.shape)} and output {tuple(output.shape)}"
        )
    if head is not None and head.shape != (weight.shape[0],):
        raise ValueError(f"relu_head must be [N] = [{weight.shape[0]}] (one weight per output of the linear layer), "
                         f"got shape {tuple(head.shape)}")
    if head is not None and not torch.compiler.is_compiling():
        # The closed form never reads the scores, so a head that did not make them would give wrong maps silently.
        with torch.no_grad():
            hidden = F.relu(output)
            offsets = scores - hidden @ head  # the head's bias, the same for every sample
            spread = (offsets.max() - offsets.min()) / (1 + (hidden @ head.abs()).max() + scores.abs().max())
        if spread > 1e3 * torch.finfo(scores.dtype).eps:
            raise ValueError("relu_head does not make the scores: "
                             "scores - relu(output) @ relu_head varies over the batch; "
                             "give relu_head only when scores = relu(output) @ relu_head + a constant")


def _relu_gate(linear: LinearAbove) -> torch.Tensor:
    """ReLU's derivative at the layer's output, [B, N], as the output's dtype."""
    return (linear.output > 0).to(linear.output.dtype)


def _output_gradients(scores: torch.Tensor, linear: LinearAbove, create_graph: bool) -> torch.Tensor:
    """d scores / d output, [B, N]: in closed form where the head is known, else by autograd."""
    if linear.relu_head is not None:
        gradients = _relu_gate(linear) * linear.relu_head
        return gradients if create_graph else gradients.detach()
    (gradients,) = torch.autograd.grad(scores.sum(), linear.output, create_graph=create_graph, retain_graph=True)
    return gradients


def _full_gradients_through_head(features: torch.Tensor, linear: LinearAbove, create_graph: bool) -> torch.Tensor:
    """d scores / d features, ``[B, K, h, w]``, for scores = relu(output) @ relu_head + c (exact)."""
    gate = _relu_gate(linear)
    if create_graph:
        grads = _GatedHeadThroughLinear.apply(linear.relu_head, gate, linear.weight)
    else:
        with torch.no_grad():
            grads = product(gate * linear.relu_head, linear.weight)
    return grads.view(features.shape)


def _channel_mean_gradients(features: torch.Tensor, scores: torch.Tensor, linear: LinearAbove,
                            create_graph: bool) -> torch.Tensor:
    """Each channel's spatial mean of d scores / d features, ``[B, K, 1, 1]``, through ``linear``.

    d scores / d A = weight^T g with g = d scores / d output, and a mean is linear, so the channel
    means are g @ (weight's spatial means): a product with K columns where the full gradient has K*h*w
    (at the paper's 26x36 grid, 936 times fewer), and the same for its double backward. Exact."""
    batch, channels, height, width = features.shape
    weight = linear.weight
    output_grads = _output_gradients(scores, linear, create_graph)
    if not create_graph:
        weight = weight.detach()  # the channel weights are constants then, as the full gradient's are
    spatial_means = weight.view(weight.shape[0], channels, height * width).mean(dim=2)  # [N, K]
    return (output_grads @ spatial_means).view(batch, channels, 1, 1)


def attention(
    features: torch.Tensor,
    scores: torch.Tensor,
    *,
    method: str,
    create_graph: bool = True,
    linear: LinearAbove | None = None,
) -> torch.Tensor:
    """Unnormalised batch-level attention map ``[B, h, w]`` by name.

    ``features`` ``[B, K, h, w]`` must lie on the graph that produced ``scores``
    ``[B]``. One ``autograd.grad`` of ``scores.sum()`` gives every sample's
    gradient (Proposition 1). The forward graph is kept so the caller can still
    backpropagate its task loss.

    ``create_graph=True``: the gradients are themselves differentiable, so a loss
    on the map reaches the parameters below the feature layer (through A) and
    the head above it (through the channel weights). ``create_graph=False``: the
    weights are constants; a loss on the map then only reaches the layers below
    the features, and costs no double backward.

    ``linear``: the linear layer the features feed (``LinearAbove``). Methods that read only the
    channel means of the gradient (Grad-CAM, signed Grad-CAM) then take those means through the
    layer's weight, with the same result (up to float rounding) and gradients at a small part of
    the cost. Methods that need every location's gradient (LayerCAM, Grad-CAM++) use it only when it
    names a ``relu_head``: the gradient in closed form, whose backward costs one product of the
    layer's size where autograd's costs two.
    """
    try:
        chosen = ATTENTION_METHODS[method]
    except KeyError:
        raise ValueError(
            f"unknown attention method {method!r}; choose one of {sorted(ATTENTION_METHODS)}"
        ) from None
    _check_inputs(features, scores)
    if linear is not None:
        _check_linear(features, scores, linear)
        if chosen.channel_means_only:
            return chosen.weighting(features, _channel_mean_gradients(features, scores, linear, create_graph))
        if linear.relu_head is not None:
            return chosen.weighting(features, _full_gradients_through_head(features, linear, create_graph))
    (grads,) = torch.autograd.grad(
        scores.sum(), features, create_graph=create_graph, retain_graph=True
    )
    return chosen.weighting(features, grads)


def gradcam(features: torch.Tensor, scores: torch.Tensor, *, create_graph: bool = True) -> torch.Tensor:
    """Batch-level Grad-CAM (Eq. 3-4): ``ReLU(mean_k w_k A^k)``, unnormalised, ``[B, h, w]``.

    See :func:`attention` for the meaning of ``create_graph``.
    """
    return attention(features, scores, method="gradcam", create_graph=create_graph)


def normalize(cam: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each sample's map to [0, 1]; an all-zero (or constant) map becomes 0.

    No additive epsilon: Grad-CAM magnitudes of an untrained network can be ~1e-9,
    and ``x / (max + eps)`` would then shrink the map and the loss with it.
    """
    flat = cam.flatten(1)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    # Constant maps: divide by 1 (numerator is 0) so backward never sees 0/0.
    safe_span = torch.where(span > 0, span, torch.ones_like(span))
    return ((flat - low) / safe_span).view_as(cam)


def resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize ``[B, h, w]`` maps to ``size``; a no-op when already that size."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


def attention_map(
    features: torch.Tensor,
    scores: torch.Tensor,
    size: tuple[int, int],
    *,
    method: str = "gradcam",
    create_graph: bool = True,
) -> torch.Tensor:
    """Attention -> per-sample min-max normalise -> bilinear resize to ``size``: ``[B, *size]`` in [0, 1]."""
    cam = attention(features, scores, method=method, create_graph=create_graph)
    return resize(normalize(cam), size)


def inspect_attention(
    forward: Callable[[], tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]],
    size: tuple[int, int],
    *,
    method: str = "gradcam",
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Attention for looking at, not for a loss (evaluation, metrics, videos, priors).

    ``forward()`` runs the model and returns ``(features, scores, outputs)``; it is called with
    gradients on even under ``torch.no_grad()``. Returns the ``outputs`` and the normalised map
    ``[B, *size]``, all detached. ``autograd.grad`` leaves parameters' ``.grad`` untouched, so
    this never disturbs training.
    """
    with torch.enable_grad():
        features, scores, outputs = forward()
        maps = attention_map(features, scores, size, method=method, create_graph=False)
    return tuple(output.detach() for output in outputs), maps.detach()


def _check_mask(attention: torch.Tensor, mask: torch.Tensor, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The mask as a float tensor, after checking that it is binary and fits the attention."""
    _require_binary(attention, mask)
    return mask.to(dtype or attention.dtype)


def _require_binary(attention: torch.Tensor, mask: torch.Tensor) -> None:
    """Raise unless ``mask`` is a binary ``[B, H, W]`` tensor with the attention's B."""
    if mask.dim() != 3 or attention.dim() != 3 or mask.shape[0] != attention.shape[0]:
        raise ValueError(
            f"attention and mask must both be [B, H, W] with the same B, got "
            f"{tuple(attention.shape)} and {tuple(mask.shape)}"
        )
    if mask.dtype == torch.bool or mask.numel() == 0:
        binary = True
    elif mask.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
        binary = bool((mask.amin() >= 0) & (mask.amax() <= 1))  # two cheap reductions
    else:
        binary = not bool(((mask != 0) & (mask != 1)).any())
    if not binary:
        raise ValueError("mask must be binary (values 0 and 1 only); threshold it first")


_INTERPOLATION_CACHE: dict = {}
CPU_MASK_CHUNK = 64  # two 64 x 120 x 160 float buffers fit a 32 MB L3 (docs/performance.md, "Matrix products")


def _linear_weights(source: int, target: int, like: torch.Tensor) -> torch.Tensor:
    """``[target, source]`` matrix of 1-D linear interpolation as ``F.interpolate`` does it
    (align_corners=False); bilinear resizing is ``R_h @ map @ R_w^T``."""
    key = (source, target, like.device, like.dtype)
    if key not in _INTERPOLATION_CACHE:
        basis = torch.eye(source, device=like.device, dtype=like.dtype).unsqueeze(1)
        weights = F.interpolate(basis, size=target, mode="linear", align_corners=False)
        _INTERPOLATION_CACHE[key] = weights.squeeze(1).t().contiguous()
    return _INTERPOLATION_CACHE[key]


class GridMask(NamedTuple):
    """A mask seen from an attention grid: the weights with which each map cell makes alpha
    (``R_h^T M R_w / |M|``) and beta (``R_h^T (1 - M) R_w / |1 - M|``) when the map is bilinearly
    upsampled to the mask, so that alpha and beta are one weighted sum each. Their difference
    ``contrast`` weighs Eq. 2's ``beta - alpha`` in one. An empty mask has no inside weights (alpha
    = 0), a full one no outside weights (beta = 0, exactly). Made by ``grid_mask``; index it like a
    tensor."""

    inside: torch.Tensor  # [B, h, w]
    outside: torch.Tensor  # [B, h, w]
    contrast: torch.Tensor  # [B, h, w]: outside - inside
    has_object: torch.Tensor  # [B] bool: the mask is not empty

    def __getitem__(self, index):
        if isinstance(index, int):  # keep tuple access for the fields
            return tuple.__getitem__(self, index)
        return GridMask(*(field[index] for field in self))


def _pull_back(region: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``R_h^T region R_w``: how much of ``region`` [B, H, W] each cell of a [h, w] map covers when the
    map is bilinearly upsampled to [H, W]."""
    batch, height, width = region.shape
    h, w = grid
    if (h, w) == (height, width):
        return region.clone()  # a copy: grid_mask reuses its region buffers chunk after chunk
    rows = _linear_weights(h, height, region)  # [H, h]
    cols = _linear_weights(w, width, region)  # [W, w]
    # two plain products, not a batched broadcast matmul (docs/performance.md, "Small choices")
    across = product(region.reshape(batch * height, width), cols).reshape(batch, height, w)
    return product(across.transpose(1, 2).reshape(batch * w, height), rows).reshape(batch, w, h).transpose(1, 2)


def grid_mask(mask: torch.Tensor, grid: tuple[int, int], *, dtype: torch.dtype = torch.float32,
              chunk: int | None = None) -> GridMask:
    """Pull a binary mask ``[B, H, W]`` back to an attention grid ``(h, w)`` (see ``GridMask``).

    Resizing is linear, so alpha and beta of a map upsampled to the mask equal sums at the map's
    own size against these weights: the same numbers without building the large resized map.
    A trainer whose masks stay fixed over several epochs pulls them back once, and its minibatch
    steps then pay one product and one sum for the CAMAL term of every sample.

    ``chunk``: masks pulled back at a time; default 64 on the CPU (their float copies stay in cache),
    all at once elsewhere. The weights do not depend on it.
    """
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be a positive number of masks, got {chunk}")
    if mask.dim() != 3:
        raise ValueError(f"mask must be [B, H, W] (a batch of binary masks), got shape {tuple(mask.shape)}")
    _require_binary(mask, mask)
    height, width = mask.shape[1:]
    # Each region pulled back on its own, not outside = all - inside: a nearly full mask's few outside
    # pixels would be lost to cancellation, and a full mask's outside weights are then exactly 0.
    if chunk is None:
        chunk = CPU_MASK_CHUNK if mask.device.type == "cpu" else max(mask.shape[0], 1)
    region = torch.empty((min(chunk, mask.shape[0]), height, width), dtype=dtype, device=mask.device)
    complement = torch.empty_like(region)  # both reused: no fresh memory per chunk
    inside, outside, inside_count = [], [], []
    for part in mask.split(chunk):
        this, other = region[: len(part)].copy_(part), complement[: len(part)].fill_(1.0)
        inside_count.append(this.sum(dim=(1, 2)))
        inside.append(_pull_back(this, grid))
        outside.append(_pull_back(other.sub_(this), grid))
    inside_count = torch.cat(inside_count)
    outside_count = height * width - inside_count
    inside = torch.cat(inside) / inside_count.clamp_min(1.0)[:, None, None]
    outside = torch.cat(outside) / outside_count.clamp_min(1.0)[:, None, None]
    return GridMask(inside.contiguous(), outside.contiguous(), outside - inside, inside_count > 0)


def alpha_beta(attention: torch.Tensor, mask: torch.Tensor | GridMask) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1: mean attention inside (alpha) and outside (beta) the mask, each ``[B]``.

    An empty mask gives alpha = 0, a full mask beta = 0 (never NaN). An attention map of
    another size than the mask is treated as bilinearly resized to the mask's size
    (``resize``), computed without building the resized map (``grid_mask``). ``mask`` may be
    a binary ``[B, H, W]`` tensor or a ``GridMask`` already pulled back to the map's grid.
    """
    mask = _as_grid_mask(attention, mask)
    return (attention * mask.inside).sum(dim=(1, 2)), (attention * mask.outside).sum(dim=(1, 2))


def _as_grid_mask(attention: torch.Tensor, mask: torch.Tensor | GridMask) -> GridMask:
    if not isinstance(mask, GridMask):
        if mask.dim() != 3 or attention.dim() != 3 or mask.shape[0] != attention.shape[0]:
            _check_mask(attention, mask)  # raises with the shapes
        return grid_mask(mask, tuple(attention.shape[-2:]), dtype=attention.dtype)
    if tuple(mask.inside.shape) != tuple(attention.shape):
        raise ValueError(f"a GridMask of shape {tuple(mask.inside.shape)} "
                         f"does not fit attention {tuple(attention.shape)}")
    return mask


REGULARIZERS = ("camal", "suppress")
EMPTY_MASK_POLICIES = ("skip", "suppress")


def camal_loss(
    attention: torch.Tensor,
    mask: torch.Tensor | GridMask,
    *,
    regularizer: Literal["camal", "suppress"] = "camal",
    empty_mask: Literal["skip", "suppress"] = "skip",
) -> torch.Tensor:
    """Eq. 2's regulariser without lambda: ``mean_b(beta_b - alpha_b)``.

    ``regularizer="suppress"`` is the suppress-only regulariser of prior work, ``mean_b(beta_b)``.
    Samples whose mask is empty have no alpha (Eq. 1 divides by the mask's area):
    ``empty_mask="skip"`` leaves them out of the mean (a batch of only such samples gives a
    zero loss that still backpropagates); ``"suppress"`` counts alpha as 0, so they add beta,
    pushing attention down everywhere on frames with nothing to look at. Given a ``GridMask`` (a
    trainer pulls its masks back once), no host sync and no data-dependent shape: the same code
    runs eagerly and under torch.compile. A raw mask is checked to be binary first (a sync).
    """
    if regularizer not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {regularizer!r}; choose one of {REGULARIZERS}")
    if empty_mask not in EMPTY_MASK_POLICIES:
        raise ValueError(f"unknown empty-mask policy {empty_mask!r}; choose one of {EMPTY_MASK_POLICIES}")
    mask = _as_grid_mask(attention, mask)
    weights = mask.contrast if regularizer == "camal" else mask.outside
    terms = (attention * weights).sum(dim=(1, 2))  # beta - alpha (or beta) of every sample
    if empty_mask == "suppress":
        return terms.mean()
    # where, not a product with the 0/1 weights: a skipped sample's NaN must not reach the mean
    kept = torch.where(mask.has_object, terms, torch.zeros_like(terms))
    return kept.sum() / mask.has_object.sum().clamp_min(1)


@torch.no_grad()
def attention_iou(attention: torch.Tensor, mask: torch.Tensor, tau: float = 0.7) -> torch.Tensor:
    """Eq. 8: IoU of ``attention > tau`` with the mask, ``[B]``; NaN where the mask is empty.

    Callers average with ``nanmean`` and report how many samples were skipped.
    """
    mask = _check_mask(attention, mask)
    attention = resize(attention, tuple(mask.shape[-2:]))
    predicted = (attention > tau).flatten(1)
    truth = mask.flatten(1).bool()
    intersection = (predicted & truth).sum(1).to(attention.dtype)
    union = (predicted | truth).sum(1).to(attention.dtype)
    iou = intersection / union.clamp_min(1.0)
    return torch.where(truth.any(1), iou, torch.full_like(iou, float("nan")))
