"""The loss core: Proposition 1, agreement with pytorch-grad-cam, gradients, edge cases, behaviour."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

from camal_rl import camal


class SmallCNN(nn.Module):
    """Conv trunk with BatchNorm whose last conv keeps the input's spatial size."""

    def __init__(self, in_channels=3, num_classes=4, stride=1):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=stride, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        )
        self.last = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))

    def forward(self, x):
        features = self.last(self.trunk(x))
        return self.head(features), features


def _trained_bn_model(dtype=torch.float64, **kwargs):
    torch.manual_seed(0)
    model = SmallCNN(**kwargs).to(dtype)
    model.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for _ in range(3):
            model(torch.randn(16, model.trunk[0].in_channels, 12, 12, dtype=dtype) * 2 + 0.5)
    return model.eval()


@pytest.mark.parametrize("method", sorted(camal.ATTENTION_METHODS))
def test_proposition1_batch_equals_per_sample(method):
    model = _trained_bn_model()
    x = torch.randn(6, 3, 12, 12, dtype=torch.float64)
    targets = torch.tensor([0, 1, 2, 3, 1, 0])
    logits, features = model(x)
    scores = logits.gather(1, targets[:, None]).squeeze(1)
    batch_maps = camal.attention(features, scores, method=method, create_graph=False)
    for b in range(x.shape[0]):
        logits_b, features_b = model(x[b : b + 1])
        own = camal.attention(features_b, logits_b[:, targets[b]], method=method, create_graph=False)
        assert (batch_maps[b] - own[0]).abs().max().item() < 1e-5
    assert batch_maps.abs().sum() > 0  # the comparison is not between two empty maps


def test_unknown_method_names_the_choices():
    model = _trained_bn_model()
    logits, features = model(torch.randn(2, 3, 12, 12, dtype=torch.float64))
    with pytest.raises(ValueError, match="gradcam"):
        camal.attention(features, logits[:, 0], method="scorecam")


@pytest.mark.parametrize(
    "method, reference_name",
    [("gradcam", "GradCAM"), ("gradcam++", "GradCAMPlusPlus"), ("layercam", "LayerCAM")],
)
def test_matches_pytorch_grad_cam(method, reference_name):
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam", reason="the test extra installs grad-cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = _trained_bn_model(dtype=torch.float32)

    class LogitsOnly(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            # x1000 so that pytorch-grad-cam's additive 1e-7 in its normalisation is negligible
            return self.inner(x)[0] * 1000.0

    wrapped = LogitsOnly(model).eval()
    x = torch.randn(4, 3, 12, 12)
    targets = [0, 3, 1, 2]
    reference_cls = getattr(pytorch_grad_cam, reference_name)
    with reference_cls(model=wrapped, target_layers=[model.last]) as cam:
        reference = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    logits, features = model(x)
    scores = logits[torch.arange(4), torch.tensor(targets)] * 1000.0
    ours = camal.normalize(camal.attention(features, scores, method=method, create_graph=False))
    assert ours.shape == reference.shape
    assert np.abs(ours.detach().numpy() - reference).max() < 1e-4


def test_one_over_k_does_not_change_normalised_map():
    model = _trained_bn_model()
    logits, features = model(torch.randn(5, 3, 12, 12, dtype=torch.float64))
    scores = logits[:, 1]
    ours = camal.gradcam(features, scores, create_graph=False)
    (grads,) = torch.autograd.grad(scores.sum(), features, retain_graph=True)
    summed = F.relu((grads.mean((2, 3), keepdim=True) * features).sum(1))  # Eq. 3 without 1/K
    assert torch.allclose(ours * features.shape[1], summed)
    assert (camal.normalize(ours) - camal.normalize(summed)).abs().max() < 1e-6


def _grad_norms(module):
    return {name: (p.grad.abs().sum().item() if p.grad is not None else 0.0) for name, p in module.named_parameters()}


def _camal_grads(create_graph):
    model = _trained_bn_model(dtype=torch.float32)
    mask = torch.zeros(4, 12, 12)
    mask[:, 3:8, 2:9] = 1
    logits, features = model(torch.randn(4, 3, 12, 12))
    maps = camal.attention_map(features, logits[:, 0], (12, 12), create_graph=create_graph)
    camal.camal_loss(maps, mask).backward()
    return _grad_norms(model)


def test_create_graph_reaches_trunk_and_head():
    grads = _camal_grads(create_graph=True)
    assert grads["trunk.0.weight"] > 0  # below the feature layer
    assert grads["last.weight"] > 0
    assert grads["head.3.weight"] > 0  # above it, through the channel weights


def test_without_create_graph_weights_are_constants():
    grads = _camal_grads(create_graph=False)
    assert grads["trunk.0.weight"] > 0
    assert grads["head.3.weight"] == 0.0  # the head only entered through the (constant) weights


def test_normalize_range_and_zero_map():
    cam = torch.stack([torch.arange(16.0).view(4, 4), torch.zeros(4, 4)])
    out = camal.normalize(cam)
    assert out[0].min() == 0 and abs(out[0].max().item() - 1) < 1e-6
    assert torch.equal(out[1], torch.zeros(4, 4))


def test_alpha_beta_iou_by_hand():
    attention = torch.tensor([[[1.0, 0.8, 0.0], [0.2, 0.0, 0.5]]])
    mask = torch.tensor([[[1, 1, 0], [0, 0, 1]]])
    alpha, beta = camal.alpha_beta(attention, mask)
    assert math.isclose(alpha.item(), (1.0 + 0.8 + 0.5) / 3, rel_tol=1e-6)
    assert math.isclose(beta.item(), (0.0 + 0.2 + 0.0) / 3, rel_tol=1e-6)
    assert math.isclose(camal.camal_loss(attention, mask).item(), beta.item() - alpha.item(), rel_tol=1e-6)
    assert math.isclose(camal.camal_loss(attention, mask, regularizer="suppress").item(), beta.item(), rel_tol=1e-6)
    # attention > 0.7 -> {(0,0), (0,1)}; mask has 3 pixels; intersection 2, union 3
    assert math.isclose(camal.attention_iou(attention, mask).item(), 2 / 3, rel_tol=1e-6)


def test_empty_and_full_masks_are_finite():
    attention = torch.rand(3, 5, 5, requires_grad=True)
    mask = torch.stack([torch.zeros(5, 5), torch.ones(5, 5), torch.eye(5)])
    alpha, beta = camal.alpha_beta(attention, mask)
    assert alpha[0] == 0 and math.isclose(beta[0].item(), attention[0].mean().item(), rel_tol=1e-6)
    assert beta[1] == 0 and math.isclose(alpha[1].item(), attention[1].mean().item(), rel_tol=1e-6)
    loss = camal.camal_loss(attention, mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(attention.grad).all()
    iou = camal.attention_iou(attention, mask)
    assert torch.isnan(iou[0]) and torch.isfinite(iou[1:]).all()


def test_mask_of_other_size_resizes_attention():
    attention = torch.zeros(1, 4, 4)
    attention[0, :2, :2] = 1.0
    mask = torch.zeros(1, 8, 8)
    mask[0, :4, :4] = 1
    alpha, beta = camal.alpha_beta(attention, mask)
    assert alpha.item() > 0.8 and beta.item() < 0.2


def test_implicit_resize_equals_explicit_resize():
    torch.manual_seed(0)
    small = torch.rand(5, 4, 6, requires_grad=True)
    mask = (torch.rand(5, 60, 80) > 0.8).to(torch.uint8)
    mask[0] = 0  # empty
    mask[1] = 1  # full
    implicit = camal.alpha_beta(small, mask)
    explicit = camal.alpha_beta(camal.resize(small, (60, 80)), mask)
    for a, b in zip(implicit, explicit, strict=True):
        assert (a - b).abs().max() < 1e-5
    (grad_implicit,) = torch.autograd.grad(camal.camal_loss(small, mask), small)
    (grad_explicit,) = torch.autograd.grad(camal.camal_loss(camal.resize(small, (60, 80)), mask), small)
    assert (grad_implicit - grad_explicit).abs().max() < 1e-6


def test_bad_masks_and_scores_raise():
    with pytest.raises(ValueError, match="binary"):
        camal.alpha_beta(torch.rand(1, 3, 3), torch.full((1, 3, 3), 0.5))
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        camal.alpha_beta(torch.rand(2, 3, 3), torch.ones(3, 3))
    features = torch.randn(2, 4, 3, 3, requires_grad=True)
    scores = features.sum((1, 2, 3)) * torch.tensor([1.0, float("nan")])
    with pytest.raises(ValueError, match="NaN"):
        camal.gradcam(features, scores)


# ---- behaviour: the CAMAL term moves attention from a decoy onto the object ----


def _decoy_data(n, generator):
    """Label = orientation of a bar at a random place; a bright decoy in the corner iff label 1."""
    images = torch.zeros(n, 1, 24, 24)
    masks = torch.zeros(n, 24, 24)
    labels = torch.randint(0, 2, (n,), generator=generator)
    for i in range(n):
        row = int(torch.randint(8, 19, (1,), generator=generator))
        col = int(torch.randint(8, 19, (1,), generator=generator))
        if labels[i] == 0:
            images[i, 0, row : row + 2, col - 3 : col + 3] = 1.0
            masks[i, row : row + 2, col - 3 : col + 3] = 1
        else:
            images[i, 0, row - 3 : row + 3, col : col + 2] = 1.0
            masks[i, row - 3 : row + 3, col : col + 2] = 1
            images[i, 0, 1:5, 1:5] = 1.0  # the decoy: perfectly label-correlated, easier to learn
    images += 0.05 * torch.randn(images.shape, generator=generator)
    return images, masks, labels


def _train_and_measure_iou(coef, steps=250):
    generator = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    model = SmallCNN(in_channels=1, num_classes=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.eval()  # BatchNorm in eval mode keeps samples independent (Proposition 1)
    for _ in range(steps):
        images, masks, labels = _decoy_data(32, generator)
        logits, features = model(images)
        loss = F.cross_entropy(logits, labels)
        if coef:
            scores = logits.gather(1, labels[:, None]).squeeze(1)
            maps = camal.attention_map(features, scores, (24, 24))
            loss = loss + coef * camal.camal_loss(maps, masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    images, masks, labels = _decoy_data(256, torch.Generator().manual_seed(99))
    logits, features = model(images)
    scores = logits.gather(1, labels[:, None]).squeeze(1)
    maps = camal.attention_map(features, scores, (24, 24), create_graph=False)
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return camal.attention_iou(maps, masks).nanmean().item(), accuracy


def test_camal_moves_attention_onto_the_object():
    iou_vanilla, acc_vanilla = _train_and_measure_iou(0.0)
    iou_camal, acc_camal = _train_and_measure_iou(0.1)  # lambda=1 also moves attention but slows CE here
    print(f"IoU vanilla {iou_vanilla:.3f} (acc {acc_vanilla:.2f}) camal {iou_camal:.3f} (acc {acc_camal:.2f})")
    assert acc_camal > 0.9
    assert iou_camal > iou_vanilla + 0.15


class FlattenHead(nn.Module):
    """Features -> flatten -> Linear -> ReLU -> a scalar head: the Doom agent's critic shape, small."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Sequential(nn.Conv2d(2, 6, 3), nn.ReLU())
        self.fc = nn.Linear(6 * 5 * 7, 16)
        self.value = nn.Linear(16, 1)

    def forward(self, x, head: bool = False):
        features = self.conv(x)
        fc_output = self.fc(features.flatten(1))
        relu_head = self.value.weight[0] if head else None
        above = camal.LinearAbove(fc_output, self.fc.weight, relu_head)
        return self.value(F.relu(fc_output)).squeeze(-1), features, above


@pytest.mark.parametrize("create_graph", [True, False])
@pytest.mark.parametrize("method", ["gradcam", "signed-gradcam", "layercam", "gradcam++"])
def test_attention_through_the_linear_layer_is_the_same_map_and_gradient(method, create_graph):
    """The gradient taken through the fc layer (Grad-CAM's channel means through its weight; with the
    value head named, every method's gradient in closed form): the same maps and the same parameter
    gradients of a CAMAL loss as autograd's full gradient gives (with constant weights too)."""
    model = FlattenHead().double()
    x = torch.randn(5, 2, 7, 9, dtype=torch.float64)
    mask = torch.rand(5, 10, 14) > 0.6
    results = []
    for linear, head in ((False, False), (True, False), (True, True)):
        model.zero_grad()
        scores, features, fc_layer = model(x, head=head)
        maps = camal.attention(features, scores, method=method, create_graph=create_graph,
                               linear=fc_layer if linear else None)
        (camal.camal_loss(camal.normalize(maps), mask) + scores.mean()).backward()
        results.append((maps.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}))
    maps_full, grads_full = results[0]
    assert maps_full.abs().sum() > 0 and grads_full["fc.weight"].abs().sum() > 0
    for maps_linear, grads_linear in results[1:]:
        assert torch.allclose(maps_full, maps_linear, atol=1e-12)
        for name, grad in grads_full.items():
            assert torch.allclose(grad, grads_linear[name], atol=1e-12), name


def test_the_closed_form_heads_backward_is_autograds():
    """gradcheck of the one-product backward (into the head and the weight) against finite differences."""
    torch.manual_seed(0)
    head = torch.randn(6, dtype=torch.float64, requires_grad=True)
    gate = (torch.randn(4, 6, dtype=torch.float64) > 0).double()
    weight = torch.randn(6, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(camal._GatedHeadThroughLinear.apply, (head, gate, weight))


def test_a_head_that_did_not_make_the_scores_is_refused():
    model = FlattenHead()
    scores, features, fc_layer = model(torch.randn(3, 2, 7, 9), head=True)
    wrong = fc_layer._replace(relu_head=-fc_layer.relu_head)
    with pytest.raises(ValueError, match="relu_head does not make the scores"):
        camal.attention(features, scores, method="layercam", linear=wrong)
    with pytest.raises(ValueError, match=r"relu_head must be \[N\] = \[16\].*got shape \(15,\)"):
        camal.attention(features, scores, method="layercam", linear=fc_layer._replace(relu_head=fc_layer.relu_head[1:]))
    camal.attention(features, scores + 3.0, method="layercam", linear=fc_layer)  # a different bias is the same head


def test_attention_through_a_linear_layer_of_another_size_is_refused():
    model = FlattenHead()
    scores, features, fc_layer = model(torch.randn(3, 2, 7, 9))
    with pytest.raises(ValueError, match=r"must have a weight \[N, 168\].*got weight \(16, 210\)"):
        camal.attention(features[:, :, 1:], scores, method="gradcam", linear=fc_layer)


def reference_camal_loss(attention, mask, regularizer, empty_mask):
    """Eq. 1-2 read literally: resize each map to its mask, average inside and outside, then the mean."""
    terms = []
    for sample, sample_mask in zip(camal.resize(attention, tuple(mask.shape[-2:])), mask.bool(), strict=True):
        inside, outside = sample[sample_mask], sample[~sample_mask]
        if not sample_mask.any() and empty_mask == "skip":
            continue
        alpha = inside.mean() if inside.numel() else sample.sum() * 0
        beta = outside.mean() if outside.numel() else sample.sum() * 0
        terms.append(beta - alpha if regularizer == "camal" else beta)
    return torch.stack(terms).mean() if terms else attention.sum() * 0


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 5), grid=st.tuples(st.integers(1, 6), st.integers(1, 6)),
       size=st.tuples(st.integers(1, 40), st.integers(1, 40)),
       kinds=st.lists(st.sampled_from(["empty", "full", "one pixel", "all but one", "random"]), min_size=5,
                      max_size=5),
       regularizer=st.sampled_from(camal.REGULARIZERS), empty_mask=st.sampled_from(camal.EMPTY_MASK_POLICIES),
       seed=st.integers(0, 2**16))
def test_camal_loss_and_its_gradient_follow_eq_1_and_2(batch, grid, size, kinds, regularizer, empty_mask, seed):
    generator = torch.Generator().manual_seed(seed)
    attention = torch.rand(batch, *grid, generator=generator, dtype=torch.float64, requires_grad=True)
    mask = (torch.rand(batch, *size, generator=generator) > 0.7).to(torch.uint8)
    for index, kind in enumerate(kinds[:batch]):
        if kind != "random":
            mask[index] = int(kind in ("full", "all but one"))
        if kind in ("one pixel", "all but one"):
            mask[index, size[0] // 2, size[1] // 2] = int(kind == "one pixel")
    expected = reference_camal_loss(attention, mask, regularizer, empty_mask)
    (expected_grad,) = torch.autograd.grad(expected, attention)
    for dtype, tolerance in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        for given_mask in (mask, camal.grid_mask(mask, grid, dtype=dtype)):
            loss = camal.camal_loss(attention.to(dtype), given_mask, regularizer=regularizer, empty_mask=empty_mask)
            assert torch.allclose(loss.double(), expected, atol=tolerance)
            (grad,) = torch.autograd.grad(loss, attention)
            assert torch.allclose(grad, expected_grad, atol=tolerance)
        # a full mask has nothing outside: beta is exactly 0, in float32 too
        _, beta = camal.alpha_beta(attention.detach().to(dtype), camal.grid_mask(mask, grid, dtype=dtype))
        full = mask.bool().flatten(1).all(1)
        assert torch.equal(beta[full], torch.zeros_like(beta[full]))


def test_a_skipped_sample_cannot_spoil_the_loss():
    attention = torch.rand(3, 4, 6, requires_grad=True)
    mask = torch.zeros(3, 60, 80, dtype=torch.uint8)
    mask[1:, 10:30, 20:40] = 1
    broken = torch.cat([torch.full((1, 4, 6), float("nan")), attention[1:]])  # the empty-mask sample is NaN
    loss = camal.camal_loss(broken, camal.grid_mask(mask, (4, 6)))
    assert torch.isfinite(loss)
    assert torch.allclose(loss, camal.camal_loss(attention[1:], mask[1:]))


@settings(max_examples=20, deadline=None)
@given(holes=st.lists(st.tuples(st.integers(0, 119), st.integers(0, 159)), min_size=1, max_size=3),
       seed=st.integers(0, 2**16))
def test_a_nearly_full_screen_mask_keeps_its_few_outside_pixels_in_float32(holes, seed):
    # the trainer's path: 120x160 label masks, float32, a 4x6 map; beta averages a handful of pixels
    attention = torch.rand(1, 4, 6, generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(1, 120, 160, dtype=torch.uint8)
    for row, col in holes:
        mask[0, row, col] = 0
    _, beta = camal.alpha_beta(attention, camal.grid_mask(mask, (4, 6)))
    upsampled = camal.resize(attention.double(), (120, 160))
    expected = upsampled[~mask.bool()].mean()
    assert abs(beta.item() - expected.item()) <= 1e-5 * max(1.0, expected.item())


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 11), chunk=st.integers(1, 4),
       dtype=st.sampled_from([torch.uint8, torch.bool, torch.float32]), seed=st.integers(0, 2**16),
       grid=st.sampled_from([(4, 6), (1, 1), (30, 40)]))
@example(batch=3, chunk=1, dtype=torch.uint8, seed=0, grid=(30, 40))  # no resize: the weights are the mask itself
def test_masks_pulled_back_in_chunks_equal_masks_pulled_back_one_by_one(batch, chunk, dtype, seed, grid):
    generator = torch.Generator().manual_seed(seed)
    mask = (torch.rand(batch, 30, 40, generator=generator) > torch.rand(batch, 1, 1, generator=generator)).to(dtype)
    mask[0] = 1  # a full one among them
    chunked = camal.grid_mask(mask, grid, chunk=chunk)
    one_by_one = [camal.grid_mask(sample[None], grid) for sample in mask]
    for field, name in zip(chunked, camal.GridMask._fields, strict=True):
        wanted = torch.cat([getattr(single, name) for single in one_by_one])
        assert field.shape == wanted.shape, name
        assert torch.allclose(field.float(), wanted.float(), atol=1e-7), name


def test_a_chunk_of_no_masks_and_a_mask_without_a_batch_are_refused():
    with pytest.raises(ValueError, match="chunk must be a positive number"):
        camal.grid_mask(torch.ones(2, 8, 8), (2, 2), chunk=0)
    with pytest.raises(ValueError, match=r"mask must be \[B, H, W\].*got shape \(8, 8\)"):
        camal.grid_mask(torch.ones(8, 8), (2, 2))
