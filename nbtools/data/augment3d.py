"""Augment3D: random 3D augmentation of a whole batch, on the device it is on, as `fit`'s batch_transform.

Spatial ops (flips, rotation, zoom, translation) are composed into one affine matrix per sample and
applied with ONE `F.grid_sample` call for the batch (trilinear), so their cost does not grow with the
number of ops and nothing goes through the CPU. A sample that is only flipped skips the resampling
and is flipped exactly with `torch.flip`. Intensity ops follow: gamma, then scale and shift. Samples
that no op picked are returned bit for bit. A segmentation mask y moves with its image: the same flips
and the same sampling grid, read with nearest neighbour, so every output voxel holds a class id that
was in the input (interpolating ids would invent a class between two others); intensity ops skip it.

Gamma on z-scored data: x**g is undefined for the negative half of a z-scored volume, and
clipping to >= 0 first moved every volume's mean from 0 to ~0.4. Here gamma is applied as nnU-Net's
GammaTransform(retain_stats=True) does: each volume (per channel) is rescaled to [0, 1] by its own
min/max, raised to g, mapped back to its range, then given back its original mean and std. The
contrast curve changes; the normalisation the model was trained for does not, and no value leaves
the domain of the power.

Built for the training GPU; on a CPU it is faster than per-sample scipy (`bench/augment3d_speed.py`,
figures in bench/README.md). The sampling grid is built one axis at a time (`_affine_grid`) because
`F.affine_grid` cost as much as grid_sample itself on a CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PADDING_MODES = ("zeros", "border", "reflection")
# Random numbers per sample per call, the same whatever ops are on. Columns: 0-2 flip D, H, W; 3-8
# fire rotate, zoom, translate, gamma, scale, shift; 9-11 angles; 12 zoom; 13-15 translation (x, y, z);
# 16 gamma; 17 scale; 18 shift.
_COLUMNS = 19


class Augment3D:
    """Batch augmentation for 3D volumes: `x, y = aug(x, y)` with x (B, C, D, H, W) float. y: labels
    (B,) or (B, k), returned as they are; or masks (B, D, H, W) (or (B, K, D, H, W), e.g. one-hot), which
    get the same spatial ops as x, with nearest-neighbour sampling and the same padding_mode.

    Each op fires per sample with its own probability: flips (each of the axes in `flip_axes`, 0=D,
    1=H, 2=W, with p_flip), rotation (angles uniform in ±max_degrees about each axis), zoom (factor
    uniform in 1 ± max_zoom), translation (uniform in ±max_translate of each side), gamma (g
    log-uniform in gamma_range, mean and std kept, see the module docstring), intensity scale (x *
    uniform 1 ± max_scale) and shift (+ uniform ±max_shift, in data units: std units for z-scored data).
    Rotations are about the volume centre in voxel units (isotropic spacing assumed), so a non-cubic
    volume is not sheared. padding_mode fills what moves in from outside: "border" (default) repeats
    the edge voxels, which for z-scored scans is background; "zeros" would paint a frame at the mean.

    Randomness: one `torch.rand(B, 19)` per call from the global torch RNG on the CPU, the same count
    whatever ops are on, so `torch.manual_seed(s)` makes it reproducible and `fit`, which checkpoints
    and restores the global RNG states, resumes bit-identically with it. With every probability 0 the
    call returns its inputs as they are and draws nothing.

    >>> aug = nbt.data.Augment3D(p_flip=0.5, p_rotate=0.3, p_gamma=0.3)
    >>> run = nbt.fit(model, train_ds, val_ds, loss, cfg, "runs/aug", batch_transform=aug)  # doctest: +SKIP
    """

    def __init__(
        self,
        p_flip: float = 0.5,
        p_rotate: float = 0.3,
        p_zoom: float = 0.3,
        p_translate: float = 0.3,
        p_gamma: float = 0.3,
        p_scale: float = 0.3,
        p_shift: float = 0.3,
        *,
        flip_axes: tuple[int, ...] = (0, 1, 2),
        max_degrees: float = 11.5,
        max_zoom: float = 0.08,
        max_translate: float = 0.08,
        gamma_range: tuple[float, float] = (0.7, 1.5),
        max_scale: float = 0.1,
        max_shift: float = 0.1,
        padding_mode: str = "border",
    ) -> None:
        probs = dict(
            p_flip=p_flip,
            p_rotate=p_rotate,
            p_zoom=p_zoom,
            p_translate=p_translate,
            p_gamma=p_gamma,
            p_scale=p_scale,
            p_shift=p_shift,
        )
        for name, p in probs.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
        if not set(flip_axes) <= {0, 1, 2}:
            raise ValueError(f"flip_axes must be a subset of (0, 1, 2) (D, H, W), got {flip_axes!r}")
        if not 0 <= max_degrees <= 180:
            raise ValueError(f"max_degrees must be in [0, 180], got {max_degrees!r}")
        if not 0 <= max_zoom < 1:
            raise ValueError(f"max_zoom must be in [0, 1) (0.08 = ±8 %), got {max_zoom!r}")
        for name, v in (("max_translate", max_translate), ("max_scale", max_scale), ("max_shift", max_shift)):
            if not v >= 0:
                raise ValueError(f"{name} must be >= 0, got {v!r}")
        lo, hi = gamma_range
        if not 0 < lo <= hi:
            raise ValueError(f"gamma_range must be (low, high) with 0 < low <= high, got {gamma_range!r}")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        self.probs = probs
        self.flip_axes = tuple(sorted(set(flip_axes)))
        self.max_degrees, self.max_zoom, self.max_translate = max_degrees, max_zoom, max_translate
        self.gamma_range, self.max_scale, self.max_shift = (float(lo), float(hi)), max_scale, max_shift
        self.padding_mode = padding_mode

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={v}" for k, v in self.probs.items())
        return f"Augment3D({ps}, padding_mode={self.padding_mode!r})"

    def __call__(self, x: torch.Tensor, y=None):
        if x.dim() != 5:
            raise ValueError(f"Augment3D expects a batch (B, C, D, H, W), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"Augment3D expects a floating-point batch, got dtype {x.dtype}")
        spatial = _is_mask(x, y)
        if not any(self.probs.values()) or x.shape[0] == 0:
            return x, y
        u = torch.rand(x.shape[0], _COLUMNS, dtype=torch.float64)  # CPU, global RNG: see the class doc
        return self._apply(x, u, y) if spatial else (self._apply(x, u), y)

    def _apply(self, x: torch.Tensor, u: torch.Tensor, mask: torch.Tensor | None = None):
        """Augment x with the random numbers u (B, 19) in [0, 1), laid out as _COLUMNS says; with a
        mask, (x, mask) with the mask moved as x was."""
        p = self.probs
        fire = {
            "flip": u[:, 0:3] < p["p_flip"],  # per axis D, H, W
            "rotate": u[:, 3] < p["p_rotate"],
            "zoom": u[:, 4] < p["p_zoom"],
            "translate": u[:, 5] < p["p_translate"],
            "gamma": u[:, 6] < p["p_gamma"],
            "scale": u[:, 7] < p["p_scale"],
            "shift": u[:, 8] < p["p_shift"],
        }
        x, moved = self._warp(x, u, fire, mask)
        x = self._gamma(x, u[:, 16], fire["gamma"])
        x = self._scale_shift(x, u, fire)
        return x if mask is None else (x, moved)

    def _warp(self, x: torch.Tensor, u: torch.Tensor, fire: dict[str, torch.Tensor], mask=None):
        """(x, mask) with the spatial ops applied to both (mask None stays None)."""
        b, _, d, h, w = x.shape
        flips = torch.zeros(b, 3, dtype=torch.bool)  # per axis D, H, W
        for k in self.flip_axes:
            flips[:, k] = fire["flip"][:, k]
        # Grid coordinates are (x, y, z) = (W, H, D): axis k of (D, H, W) is coordinate 2 - k.
        signs = torch.where(flips.flip(1), -1.0, 1.0).double()
        angles = (2 * u[:, 9:12] - 1) * math.radians(self.max_degrees) * fire["rotate"].unsqueeze(1)
        zoom = 1 + (2 * u[:, 12] - 1) * self.max_zoom * fire["zoom"]
        shift = (2 * u[:, 13:16] - 1) * self.max_translate * fire["translate"].unsqueeze(1)
        resample = fire["rotate"] | fire["zoom"] | fire["translate"]
        # A sample that is only flipped needs no interpolation: torch.flip does it exactly and cheaply.
        flip_only = flips.any(dim=1) & ~resample
        if not (resample.any() or flip_only.any()):
            return x, mask
        # In voxel units centred on the volume: p_in = diag(signs) R p_out / zoom. Normalised grid
        # coordinates are n = p / half, so theta = half^-1 (diag(signs) R / zoom) half; a shift of
        # f sides is 2 f in normalised units.
        half = torch.tensor([w, h, d], dtype=torch.float64) / 2
        m = signs.unsqueeze(2) * _rotation(angles) / zoom.view(b, 1, 1)
        m = m * half.view(1, 1, 3) / half.view(1, 3, 1)
        theta = torch.cat([m, 2 * shift.unsqueeze(2)], dim=2)
        if resample.all():  # skip copying, gathering and scattering the batch: ~20 % of the warp on CPU
            return self._resample(x, theta, mask)
        out = x.clone()
        moved = None if mask is None else mask.clone()
        if resample.any():
            idx = torch.nonzero(resample).flatten()
            dev_idx = idx.to(x.device)
            out[dev_idx], warped = self._resample(
                x[dev_idx], theta[idx], None if mask is None else mask[dev_idx]
            )
            if mask is not None:
                moved[dev_idx] = warped
        lead = 0 if mask is None else mask.dim() - 3  # the mask's first spatial axis
        for pattern in torch.unique(flips[flip_only], dim=0):  # at most 7 patterns
            idx = torch.nonzero(flip_only & (flips == pattern).all(dim=1)).flatten().to(x.device)
            axes = [k for k in range(3) if pattern[k]]
            out[idx] = x[idx].flip([2 + k for k in axes])
            if mask is not None:
                moved[idx] = mask[idx].flip([lead + k for k in axes])
        return out, moved

    def _resample(self, x: torch.Tensor, theta: torch.Tensor, mask=None):
        """(x, mask): x (n, C, D, H, W) warped by the affines theta (n, 3, 4), trilinear, in one
        grid_sample call; the mask (n, D, H, W) or (n, K, D, H, W) on the same grid, nearest."""
        grid = _affine_grid(theta.to(device=x.device, dtype=x.dtype), x.shape[2:])
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode=self.padding_mode, align_corners=False)
        if mask is None:
            return out, None
        # float32 holds every class id exactly; nearest copies input values, so no id is invented
        m = (mask.unsqueeze(1) if mask.dim() == 4 else mask).to(torch.float32)
        m = F.grid_sample(
            m, grid.float(), mode="nearest", padding_mode=self.padding_mode, align_corners=False
        )
        return out, (m.squeeze(1) if mask.dim() == 4 else m).to(mask.dtype)

    def _gamma(self, x: torch.Tensor, u: torch.Tensor, fire: torch.Tensor) -> torch.Tensor:
        if not fire.any():
            return x
        lo, hi = math.log(self.gamma_range[0]), math.log(self.gamma_range[1])
        idx = torch.nonzero(fire).flatten()
        g = torch.exp(lo + (hi - lo) * u[idx]).to(device=x.device, dtype=x.dtype).view(-1, 1, 1)
        every = len(idx) == len(x)
        dev_idx = idx.to(x.device)
        v = (x if every else x[dev_idx]).flatten(2)  # (n, C, L)
        mn, mx = v.amin(dim=2, keepdim=True), v.amax(dim=2, keepdim=True)
        std, mean = torch.std_mean(v, dim=2, keepdim=True)
        span = mx - mn
        flat = span == 0  # a constant channel has no contrast to bend
        # In [0, 1] by the channel's own range (clamp: rounding can step outside), then the power.
        # Mapping back to [min, max] is skipped: restoring the mean and std below undoes any affine map.
        p = torch.sub(v, mn).div_(torch.where(flat, 1.0, span)).clamp_(0, 1).pow_(g)
        p_std, p_mean = torch.std_mean(p, dim=2, keepdim=True)
        k = torch.where(p_std > 0, std / p_std, 0.0)
        out = p.mul_(k).add_(mean - p_mean * k)
        if flat.any():
            out = torch.where(flat, v, out)
        out = out.view((len(idx), *x.shape[1:]))
        return out if every else x.index_copy(0, dev_idx, out)

    def _scale_shift(self, x: torch.Tensor, u: torch.Tensor, fire: dict[str, torch.Tensor]) -> torch.Tensor:
        scaled, shifted = fire["scale"], fire["shift"]
        if not (scaled.any() or shifted.any()):
            return x
        factor = torch.where(scaled, 1 + (2 * u[:, 17] - 1) * self.max_scale, 1.0)
        offset = torch.where(shifted, (2 * u[:, 18] - 1) * self.max_shift, 0.0)
        view = (-1, 1, 1, 1, 1)
        factor = factor.to(device=x.device, dtype=x.dtype).view(view)
        offset = offset.to(device=x.device, dtype=x.dtype).view(view)
        out = torch.addcmul(offset, x, factor)  # x * factor + offset in one pass
        picked = scaled | shifted
        if picked.all():
            return out
        # torch.where keeps untouched samples exact (x * 1 + 0 would turn -0.0 into 0.0).
        return torch.where(picked.to(x.device).view(view), out, x)


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (B, 3, 3) = Rz @ Ry @ Rx for angles (B, 3) in radians about x, y, z."""
    cx, cy, cz = torch.cos(angles).unbind(1)
    sx, sy, sz = torch.sin(angles).unbind(1)
    one, zero = torch.ones_like(cx), torch.zeros_like(cx)
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], 1).view(-1, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], 1).view(-1, 3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], 1).view(-1, 3, 3)
    return rz @ ry @ rx


def _affine_grid(theta: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """`F.affine_grid(theta, (N, C, *size), align_corners=False)`, built one axis at a time.

    theta: (N, 3, 4) float; size: (D, H, W); returns the grid (N, D, H, W, 3) in theta's dtype and
    device. The grid is affine in the voxel-centre coordinates, grid[n, i, j, k] = theta[n] @ (x_k,
    y_j, z_i, 1), so it is a sum of three small per-axis terms broadcast against each other. Why: on
    CPU, F.affine_grid multiplies a (N, D*H*W, 4) base grid by theta, which took as long as grid_sample
    itself; this is several times cheaper and agrees to ~1e-6 (tests check it).
    """
    n = theta.shape[0]
    d, h, w = size

    def centres(steps: int) -> torch.Tensor:
        # voxel centres in normalised coordinates (align_corners=False): (2 i + 1) / steps - 1
        return (torch.arange(steps, dtype=theta.dtype, device=theta.device) * 2 + 1) / steps - 1

    gx = centres(w).view(1, w, 1) * theta[:, None, :, 0]  # (N, W, 3)
    gy = centres(h).view(1, h, 1) * theta[:, None, :, 1]  # (N, H, 3)
    gz = centres(d).view(1, d, 1) * theta[:, None, :, 2] + theta[:, None, :, 3]  # (N, D, 3)
    # the two small terms first, so that only the last addition is the size of the grid
    return (gz.view(n, d, 1, 1, 3) + gy.view(n, 1, h, 1, 3)) + gx.view(n, 1, 1, w, 3)


def _is_mask(x: torch.Tensor, y) -> bool:
    """True when y is a mask over x's voxels, (B, D, H, W) or (B, K, D, H, W); False for labels (B,)
    or (B, k); a y with spatial dims that do not match x's is an error."""
    if not isinstance(y, torch.Tensor) or y.dim() < 3:
        return False
    b, spatial = x.shape[0], tuple(x.shape[2:])
    if y.shape[0] == b and (
        tuple(y.shape[1:]) == spatial or (y.dim() == 5 and tuple(y.shape[2:]) == spatial)
    ):
        return True
    raise ValueError(
        f"Augment3D got y of shape {tuple(y.shape)} with x {tuple(x.shape)}: a mask must be (B, D, H, W) = "
        f"{(b, *spatial)} (or (B, K, D, H, W)), labels (B,) or (B, k)"
    )
