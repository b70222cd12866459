"""Sampling grids that move image and mask together: affine matrices, smooth random fields, radial lens maps.

Every function works on a whole batch and returns tensors; `warp` is the one place that resamples. Coordinates
follow `grid_sample` with align_corners=False: x and y in [-1, 1] across the image, x first.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def identity_grid(height: int, width: int, device: torch.device) -> Tensor:
    """(H, W, 2) normalised (x, y) of every pixel centre."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) * 2 + 1) / height - 1
    xs = (torch.arange(width, device=device, dtype=torch.float32) * 2 + 1) / width - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1)


def rotation_matrices(degrees: Tensor) -> Tensor:
    """(N, 2, 2) output -> source maps in centred pixel units; positive angles turn the content anticlockwise."""
    rad = degrees * (math.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # y points down in images, so an anticlockwise turn of the content reads the source at R(+angle) p.
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def scale_matrices(ratios: Tensor) -> Tensor:
    """(N, 2, 2): content shrunk by `ratio` about the centre (the seed's shrink-and-pad), source = p / ratio."""
    inv = 1 / ratios
    zero = torch.zeros_like(ratios)
    return torch.stack([torch.stack([inv, zero], -1), torch.stack([zero, inv], -1)], -2)


def shear_matrices(shears: Tensor) -> Tensor:
    """(N, 2, 2): the seed's vertical shear about the centre, y' = y + s x, so source y = y - s x."""
    one, zero = torch.ones_like(shears), torch.zeros_like(shears)
    return torch.stack([torch.stack([one, zero], -1), torch.stack([-shears, one], -1)], -2)


def flip_matrices(flip_x: Tensor, flip_y: Tensor) -> Tensor:
    """(N, 2, 2) diagonal -1/+1 from boolean (N,) flags."""
    sx = 1 - 2 * flip_x.float()
    sy = 1 - 2 * flip_y.float()
    zero = torch.zeros_like(sx)
    return torch.stack([torch.stack([sx, zero], -1), torch.stack([zero, sy], -1)], -2)


def to_normalised(matrices: Tensor, height: int, width: int) -> Tensor:
    """Pixel-unit (N, 2, 2) maps rewritten for normalised coordinates, so rotations stay rigid on non-square images."""
    half = torch.tensor([width / 2, height / 2], device=matrices.device, dtype=matrices.dtype)
    return matrices * half[None, None, :] / half[None, :, None]  # D^-1 M D with D = diag(W/2, H/2)


def gaussian_kernel(sigma: float) -> Tensor:
    """1-D Gaussian of unit sum, truncated at 4 sigma like scipy's gaussian_filter."""
    radius = max(1, int(4 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def smooth_noise(noise: Tensor, sigma: float) -> Tensor:
    """Blur (N, 2, h + 2r, w + 2r) noise with a Gaussian of `sigma` cells, keeping only the (N, 2, h, w) valid part.

    The noise is drawn with an r-cell margin, so no padding is needed and the field is as rough at the image
    border as in its middle (the seed's reflect padding made borders smoother).
    """
    k = gaussian_kernel(sigma).to(noise.device)
    c = noise.shape[1]
    out = F.conv2d(noise, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def coarse_shape(height: int, width: int, sigma: float) -> tuple[int, int, float, int]:
    """Cells (h, w), sigma in cells and kernel radius for a field of pixel smoothness `sigma`.

    A cell spans sigma/2 pixels: the field barely changes within a cell, so blurring a coarse grid and upsampling
    gives nearly the same field as blurring every pixel, at a small fraction of the cost.
    """
    step = max(1.0, sigma / 2)
    cell_sigma = sigma / step
    radius = len(gaussian_kernel(cell_sigma)) // 2
    return math.ceil((height - 1) / step) + 1, math.ceil((width - 1) / step) + 1, cell_sigma, radius


def upsample_field(field: Tensor, height: int, width: int) -> Tensor:
    """(N, 2, h, w) coarse displacements -> (N, H, W, 2), the layout `grid_sample` wants."""
    full = F.interpolate(field, size=(height, width), mode="bilinear", align_corners=True)
    return full.permute(0, 2, 3, 1)


def elastic_displacement(noise: Tensor, sigma: float, alpha: float, height: int, width: int) -> Tensor:
    """(N, H, W, 2) pixel displacements with the spread of the seed's Simard field: alpha * blur(U(-1, 1), sigma).

    `noise` is standard normal of the shape `coarse_shape` asks for (plus margins). It is rescaled so the field's
    standard deviation equals that of the seed's full-resolution uniform-noise field, so `alpha` and `sigmoid`
    keep their seed meaning in pixels.
    """
    _, _, cell_sigma, _ = coarse_shape(height, width, sigma)
    coarse = smooth_noise(noise, cell_sigma)
    # A separable blur of unit-variance white noise has std = sum(k**2) of its 1-D kernel; U(-1, 1) has std sqrt(1/3).
    coarse_std = float(gaussian_kernel(cell_sigma).square().sum())
    seed_std = alpha * math.sqrt(1 / 3) * float(gaussian_kernel(sigma).square().sum())
    return upsample_field(coarse * (seed_std / coarse_std), height, width)


def distortion_displacement(noise: Tensor, sigma: float, size: float, height: int, width: int) -> Tensor:
    """(N, H, W, 2) smooth displacements whose largest magnitude per sample and axis is `size` * max(H, W) pixels."""
    _, _, cell_sigma, _ = coarse_shape(height, width, sigma)
    coarse = smooth_noise(noise, cell_sigma)
    peak = coarse.abs().amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    return upsample_field(coarse / peak * (size * max(height, width)), height, width)


def radial_displacement(centres: Tensor, radius: float, amount: float, height: int, width: int) -> Tensor:
    """(N, H, W, 2) pixel displacements of the seed's barrel (amount > 0) / pincushion (amount < 0) lens.

    Inside `radius` * W of the centre (fractions of W, H, shape (N, 2)) the source point is
    centre + delta * sin(pi * dist / (2 r)) ** amount; outside it nothing moves. One vectorised formula instead of
    the seed's per-pixel Python loops.
    """
    device = centres.device
    ys = torch.arange(height, device=device, dtype=torch.float32)
    xs = torch.arange(width, device=device, dtype=torch.float32)
    cx = (centres[:, 0] * width).view(-1, 1, 1)
    cy = (centres[:, 1] * height).view(-1, 1, 1)
    dx = xs.view(1, 1, -1) - cx  # (N, 1, W)
    dy = ys.view(1, -1, 1) - cy  # (N, H, 1)
    dist = torch.sqrt(dx * dx + dy * dy)  # (N, H, W)
    r = radius * width
    inside = (dist < r) & (dist > 0)
    sine = torch.sin(math.pi * dist / (2 * r)).clamp_min(1e-6)
    factor = torch.where(inside, sine.pow(amount), torch.ones_like(dist))
    return torch.stack([(factor - 1) * dx, (factor - 1) * dy], dim=-1)


def pixels_to_normalised(displacement: Tensor, height: int, width: int) -> Tensor:
    """Pixel displacements (..., 2) in normalised units (2 / size per pixel)."""
    return displacement * displacement.new_tensor([2 / width, 2 / height])


def warp(images: Tensor, labels: Tensor, grid: Tensor) -> tuple[Tensor, Tensor]:
    """Resample images (N, C, H, W) bilinearly and labels (N, H, W) with nearest, on the same grid (N, H, W, 2).

    Outside the source, images take the colour of their pixel (2, 2) (the seed's fill) and labels take 0.
    """
    dtype = images.dtype
    images = images.float()  # sample in float32: a bfloat16 grid would be off by pixels on large images
    fill = images[:, :, 2:3, 2:3]  # (N, C, 1, 1)
    out = F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
    # labels with nearest: bilinear would invent classes between two neighbours
    out_labels = F.grid_sample(labels[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.clamp_(0, 1).to(dtype), out_labels[:, 0].round().to(labels.dtype)
