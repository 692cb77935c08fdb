"""Drawing attention over frames: one function used by videos, the attention panel and the
trainer's TensorBoard image grid (numpy and OpenCV only)."""

from __future__ import annotations

import cv2
import numpy as np

MASK_COLOUR = (0, 255, 0)
HEAT_WEIGHT = 0.4


def to_rgb(frame: np.ndarray) -> np.ndarray:
    """``[H, W]``, ``[H, W, 1|3]`` or channels-first ``[1|3, H, W]`` uint8 -> ``[H, W, 3]``."""
    if frame.ndim == 3 and frame.shape[0] in (1, 3) and frame.shape[-1] not in (1, 3):
        frame = frame.transpose(1, 2, 0)
    if frame.ndim == 3 and frame.shape[-1] == 1:
        frame = frame[..., 0]
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=2)
    return np.ascontiguousarray(frame, dtype=np.uint8)


def heat_colours(attention: np.ndarray) -> np.ndarray:
    """Attention in [0, 1] -> RGB jet colours (0 blue, 1 red)."""
    return cv2.applyColorMap(np.uint8(np.clip(attention, 0, 1) * 255), cv2.COLORMAP_JET)[..., ::-1]


def draw_attention(screen: np.ndarray, attention: np.ndarray, mask: np.ndarray | None = None, *,
                   scale: int = 1) -> np.ndarray:
    """The screen with the attention as a heat overlay and the mask's outline, upscaled by ``scale``.

    ``attention`` (any size, values in [0, 1]) is bilinearly resized to the screen, as the
    trainer's loss and IoU resize it to the mask; ``mask`` (screen size or any) is outlined in green.
    """
    screen = to_rgb(screen)
    height, width = screen.shape[:2]
    heat = cv2.resize(attention.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    frame = cv2.addWeighted(screen, 1 - HEAT_WEIGHT, heat_colours(heat), HEAT_WEIGHT, 0)
    size = (width * scale, height * scale)
    if scale != 1:
        frame = cv2.resize(frame, size, interpolation=cv2.INTER_NEAREST)
    if mask is not None:
        outline = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(outline, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(frame, contours, -1, MASK_COLOUR, 1)
    return frame


def fit_height(image: np.ndarray, height: int) -> np.ndarray:
    """Resize keeping the aspect ratio (area averaging when shrinking)."""
    if image.shape[0] == height:
        return image
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    interpolation = cv2.INTER_AREA if height < image.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def tile(images: list[np.ndarray], columns: int, gap: int = 2) -> np.ndarray:
    """Equal-sized RGB images on a grid, row by row, separated by ``gap`` black pixels."""
    if not images:
        raise ValueError("nothing to tile")
    height, width = images[0].shape[:2]
    rows = -(-len(images) // columns)
    grid = np.zeros((rows * height + (rows - 1) * gap, columns * width + (columns - 1) * gap, 3), np.uint8)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        top, left = row * (height + gap), column * (width + gap)
        grid[top : top + height, left : left + width] = image
    return grid
