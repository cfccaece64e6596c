//! Hot loops of lsskd-edge's training kernels (see `src/lsskd/kernels.rs` for the burn
//! autodiff glue and the gradient tests), and in [`direct`] the inference convolution that
//! runs inside tract's plan. Training: convolution forward and backward through im2col /
//! GEMM / col2im, parallel over the batch, and batch-norm (+ReLU) training forward and backward.
//!
//! A crate of its own so that the dev profile's `[profile.dev.package."*"]` settings (opt
//! level 3, no debug assertions or overflow checks) apply to these loops; the main crate
//! builds at opt level 1, where they run several times slower. Plain slices, float32,
//! NCHW; no burn types.

pub mod direct;

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Chunks of the batch for the parallel passes: a few per thread for balance.
fn batch_chunk(n: usize) -> usize {
    let chunks = (rayon::current_num_threads() * 2).clamp(1, n.max(1));
    n.div_ceil(chunks).max(1)
}

// ---------------------------------------------------------------------------------------
// conv2d backward
// ---------------------------------------------------------------------------------------

/// Shape of a square-stride, symmetric-padding, dilation-1, single-group convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geom {
    pub n: usize,
    pub ci: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub ho: usize,
    pub wo: usize,
}

impl Geom {
    pub fn new(x: &[usize], w: &[usize], stride: usize, pad: usize) -> Self {
        let (kh, kw) = (w[2], w[3]);
        let ho = (x[2] + 2 * pad - kh) / stride + 1;
        let wo = (x[3] + 2 * pad - kw) / stride + 1;
        Self {
            n: x[0],
            ci: x[1],
            h: x[2],
            w: x[3],
            co: w[0],
            kh,
            kw,
            stride,
            pad,
            ho,
            wo,
        }
    }

    /// Rows of the im2col matrix: ci·kh·kw.
    pub fn k(&self) -> usize {
        self.ci * self.kh * self.kw
    }

    /// Output positions per sample.
    pub fn p(&self) -> usize {
        self.ho * self.wo
    }

    /// The output columns `o` whose input column `o·stride + k − pad` lies in `[0, size)`.
    fn valid(&self, k: usize, size: usize, out: usize) -> (usize, usize) {
        let lo = if k >= self.pad {
            0
        } else {
            (self.pad - k).div_ceil(self.stride)
        };
        let hi = (size + self.pad)
            .checked_sub(k)
            .map_or(0, |v| v.div_ceil(self.stride))
            .min(out);
        (lo.min(hi), hi)
    }
}

impl Geom {
    /// Stride 1 with "same" padding: each im2col row is the input plane shifted by
    /// `(ky − pad)·w + (kx − pad)`, except for the columns that wrap around a row edge.
    fn shifts_plane(&self) -> bool {
        self.stride == 1 && self.ho == self.h && self.wo == self.w
    }

    /// Flat shift of kernel tap (ky, kx) in a [`Self::shifts_plane`] convolution, the
    /// range of output positions whose shifted index lies in the plane, and the tap's
    /// column offset.
    fn shift(&self, ky: usize, kx: usize) -> (isize, std::ops::Range<usize>, isize) {
        let p = self.p() as isize;
        let dx = kx as isize - self.pad as isize;
        let shift = (ky as isize - self.pad as isize) * self.w as isize + dx;
        let lo = (-shift).clamp(0, p) as usize;
        let hi = (p - shift).clamp(0, p) as usize;
        (shift, lo..hi.max(lo), dx)
    }

    /// Zero, in an im2col row of tap column offset `dx`, the output columns whose input
    /// column lies outside the plane (they wrapped around a row edge in the flat shift).
    fn zero_wrapped(&self, row: &mut [f32], dx: isize) {
        let w = self.w;
        let cols = if dx > 0 {
            w - (dx as usize).min(w)..w
        } else {
            0..((-dx) as usize).min(w)
        };
        if cols.is_empty() {
            return;
        }
        for r in row.chunks_exact_mut(w) {
            for v in &mut r[cols.clone()] {
                *v = 0.0;
            }
        }
    }
}

/// `col[(c·kh + ky)·kw + kx][oy·wo + ox] = x[c][oy·s + ky − pad][ox·s + kx − pad]` (0 outside).
pub fn im2col(g: &Geom, x: &[f32], col: &mut [f32]) {
    let (s, p) = (g.stride, g.p());
    for c in 0..g.ci {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = &mut col[((c * g.kh + ky) * g.kw + kx) * p..][..p];
                if g.shifts_plane() {
                    // One contiguous copy of the plane, then the wrapped columns zeroed.
                    let (shift, valid, dx) = g.shift(ky, kx);
                    row[..valid.start].iter_mut().for_each(|v| *v = 0.0);
                    row[valid.end..].iter_mut().for_each(|v| *v = 0.0);
                    if !valid.is_empty() {
                        let src = (valid.start as isize + shift) as usize;
                        row[valid.clone()].copy_from_slice(&plane[src..src + valid.len()]);
                    }
                    g.zero_wrapped(row, dx);
                    continue;
                }
                let (y0, y1) = g.valid(ky, g.h, g.ho);
                let (x0, x1) = g.valid(kx, g.w, g.wo);
                for oy in 0..g.ho {
                    let dst = &mut row[oy * g.wo..(oy + 1) * g.wo];
                    if oy < y0 || oy >= y1 || x0 >= x1 {
                        dst.iter_mut().for_each(|v| *v = 0.0);
                        continue;
                    }
                    let src = &plane[(oy * s + ky - g.pad) * g.w..][..g.w];
                    dst[..x0].iter_mut().for_each(|v| *v = 0.0);
                    dst[x1..].iter_mut().for_each(|v| *v = 0.0);
                    let first = x0 * s + kx - g.pad;
                    for (d, ox) in dst[x0..x1].iter_mut().zip(0..) {
                        *d = src[first + ox * s];
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: `dx[c][iy][ix] += dcol[…][…]` for every use of that input.
/// `dcol` is scratch: the entries that [`im2col`] would have zeroed are zeroed in it.
pub fn col2im(g: &Geom, dcol: &mut [f32], dx: &mut [f32]) {
    let (s, p) = (g.stride, g.p());
    for c in 0..g.ci {
        let plane = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = &mut dcol[((c * g.kh + ky) * g.kw + kx) * p..][..p];
                if g.shifts_plane() {
                    let (shift, valid, dx) = g.shift(ky, kx);
                    g.zero_wrapped(row, dx);
                    if valid.is_empty() {
                        continue;
                    }
                    let dst = (valid.start as isize + shift) as usize;
                    for (d, v) in plane[dst..dst + valid.len()].iter_mut().zip(&row[valid]) {
                        *d += v;
                    }
                    continue;
                }
                let (y0, y1) = g.valid(ky, g.h, g.ho);
                let (x0, x1) = g.valid(kx, g.w, g.wo);
                if x0 >= x1 {
                    continue;
                }
                for oy in y0..y1 {
                    let src = &row[oy * g.wo..(oy + 1) * g.wo];
                    let dst = &mut plane[(oy * s + ky - g.pad) * g.w..][..g.w];
                    let first = x0 * s + kx - g.pad;
                    for (v, ox) in src[x0..x1].iter().zip(0..) {
                        dst[first + ox * s] += v;
                    }
                }
            }
        }
    }
}

/// A vector of `len` floats that `fill` writes in full (the outputs below are all written
/// element by element or by a GEMM that does not read its destination), so that it is not
/// zeroed first: zeroing costs a pass over memory as long as a BatchNorm's.
fn written(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    fill(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: every caller writes all `len` elements in `fill` (see each call).
    unsafe { v.set_len(len) };
    v
}

/// `dst[m×n] (row-major) = (accumulate ? dst : 0) + lhs · rhs`, strides in elements.
/// SAFETY (caller): `dst` is valid for writes of `dst_len` floats, and for reads when
/// `accumulate`; it does not alias `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    (dst, dst_len): (*mut f32, usize),
    accumulate: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
) {
    // Bounds of the strided views (the gemm call itself is unchecked).
    assert!(dst_len >= m * n);
    assert!(m == 0 || k == 0 || lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    assert!(k == 0 || n == 0 || rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    // SAFETY: every element read or written lies within the slices (checked above) and
    // `dst` (the caller's promise); without `accumulate` gemm does not read `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// [`gemm_raw`] into an initialised matrix.
#[allow(clippy::too_many_arguments)]
fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
) {
    // SAFETY: a &mut slice, not aliased by the two & slices.
    unsafe {
        gemm_raw(
            m,
            n,
            k,
            (dst.as_mut_ptr(), dst.len()),
            accumulate,
            lhs,
            lhs_strides,
            rhs,
            rhs_strides,
        )
    }
}

/// `a[m×k] · b[k×n]`, row-major, on the calling thread (what the inference profile
/// measures as this machine's practical single-core peak).
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    assert_eq!(a.len(), m * k, "lhs is m×k");
    assert_eq!(b.len(), k * n, "rhs is k×n");
    let mut out = vec![0.0; m * n];
    gemm_f32(m, n, k, &mut out, false, a, (k, 1), b, (n, 1));
    out
}

/// [`gemm_raw`] into storage not initialised yet: writes all `m·n` elements.
#[allow(clippy::too_many_arguments)]
fn gemm_into(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [MaybeUninit<f32>],
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
) {
    // SAFETY: a &mut slice, not aliased by the two & slices; not read (no accumulate).
    unsafe {
        gemm_raw(
            m,
            n,
            k,
            (dst.as_mut_ptr().cast::<f32>(), dst.len()),
            false,
            lhs,
            lhs_strides,
            rhs,
            rhs_strides,
        )
    }
}

/// `y = conv(x, w)` (no bias), parallel over chunks of the batch: per sample, im2col and
/// `Y_b[co, p] = W[co, k] · col[k, p]`; a 1×1 stride-1 convolution multiplies x directly.
pub fn conv_forward(g: &Geom, x: &[f32], w: &[f32]) -> Vec<f32> {
    let (k, p) = (g.k(), g.p());
    let xs = g.ci * g.h * g.w;
    let ys = g.co * p;
    let direct = g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0;
    let per = batch_chunk(g.n);
    // Every sample's co×p block is written by its GEMM.
    written(g.n * ys, |y| {
        y.par_chunks_mut(per * ys).enumerate().for_each(|(i, out)| {
            let mut col = vec![0.0f32; if direct { 0 } else { k * p }];
            for (j, y_b) in out.chunks_mut(ys).enumerate() {
                let b = i * per + j;
                let x_b = &x[b * xs..(b + 1) * xs];
                let col = if direct {
                    x_b
                } else {
                    im2col(g, x_b, &mut col);
                    &col
                };
                gemm_into(g.co, p, k, y_b, w, (k, 1), col, (p, 1));
            }
        })
    })
}

/// dX and dW of `y = conv(x, w)` given dY, parallel over chunks of the batch.
pub fn conv_backward(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    need_dx: bool,
    need_dw: bool,
) -> (Vec<f32>, Vec<f32>) {
    let (k, p) = (g.k(), g.p());
    let xs = g.ci * g.h * g.w;
    let ys = g.co * p;
    let per = batch_chunk(g.n);
    let work = |start: usize, dx: Option<&mut [f32]>| -> Vec<f32> {
        let end = (start + per).min(g.n);
        let mut col = vec![0.0f32; if need_dw { k * p } else { 0 }];
        let mut dcol = vec![0.0f32; if need_dx { k * p } else { 0 }];
        let mut dw = vec![0.0f32; if need_dw { g.co * k } else { 0 }];
        let mut dx = dx;
        for b in start..end {
            let dy_b = &dy[b * ys..(b + 1) * ys];
            if need_dw {
                im2col(g, &x[b * xs..(b + 1) * xs], &mut col);
                // dW[co, k] += Σ_p dY_b[co, p] · col[k, p]
                gemm_f32(g.co, k, p, &mut dw, b > start, dy_b, (p, 1), &col, (1, p));
            }
            if let Some(dx) = dx.as_deref_mut() {
                // dcol[k, p] = Σ_co W[co, k] · dY_b[co, p]
                gemm_f32(k, p, g.co, &mut dcol, false, w, (1, k), dy_b, (p, 1));
                col2im(
                    g,
                    &mut dcol,
                    &mut dx[(b - start) * xs..(b - start + 1) * xs],
                );
            }
        }
        dw
    };
    let mut dx = vec![0.0f32; if need_dx { g.n * xs } else { 0 }];
    let partials: Vec<Vec<f32>> = if need_dx {
        dx.par_chunks_mut(per * xs)
            .enumerate()
            .map(|(i, chunk)| work(i * per, Some(chunk)))
            .collect()
    } else {
        (0..g.n.div_ceil(per))
            .into_par_iter()
            .map(|i| work(i * per, None))
            .collect()
    };
    let mut partials = partials.into_iter();
    let mut dw = partials.next().unwrap_or_default();
    for part in partials {
        for (a, b) in dw.iter_mut().zip(&part) {
            *a += b;
        }
    }
    (dx, dw)
}

// ---------------------------------------------------------------------------------------
// batch norm (training) + optional ReLU
// ---------------------------------------------------------------------------------------

/// Lanes of the vectorisable reductions below.
const LANES: usize = 8;

/// `(Σ u, Σ v)` of `f(x, d, m) → (u, v)` over equal-length rows `x`, `d` and the mask row
/// `m` (or `x` again when there is none), in [`LANES`] independent f32 accumulators over
/// fixed-size chunks (bounds-check free, so the compiler vectorises it); lanes and the
/// remainder are summed in f64.
#[inline(always)]
fn sum2(x: &[f32], d: &[f32], m: &[f32], f: impl Fn(f32, f32, f32) -> (f32, f32)) -> (f64, f64) {
    let n = x.len();
    let (d, m) = (&d[..n], &m[..n]);
    let (mut a, mut b) = ([0.0f32; LANES], [0.0f32; LANES]);
    let xc = x.chunks_exact(LANES);
    let (xr, dr, mr) = (
        xc.remainder(),
        &d[n / LANES * LANES..],
        &m[n / LANES * LANES..],
    );
    for ((x8, d8), m8) in xc.zip(d.chunks_exact(LANES)).zip(m.chunks_exact(LANES)) {
        for l in 0..LANES {
            let (u, v) = f(x8[l], d8[l], m8[l]);
            a[l] += u;
            b[l] += v;
        }
    }
    let (mut sa, mut sb) = (0.0f64, 0.0f64);
    for ((&x, &d), &m) in xr.iter().zip(dr).zip(mr) {
        let (u, v) = f(x, d, m);
        sa += u as f64;
        sb += v as f64;
    }
    for l in 0..LANES {
        sa += a[l] as f64;
        sb += b[l] as f64;
    }
    (sa, sb)
}

/// dY through a ReLU whose output was `y`: a select, not a branch (the mask is random).
#[inline(always)]
fn relu_mask(d: f32, y: f32) -> f32 {
    if y > 0.0 { d } else { 0.0 }
}

/// Per channel, the sums over samples of `f(sample, channel)`, in sample order through
/// memory: parallel over chunks of the batch, each with its own per-channel partials.
fn per_channel_sums(
    n: usize,
    c: usize,
    f: impl Fn(usize, usize) -> (f64, f64) + Sync,
) -> Vec<(f64, f64)> {
    let per = batch_chunk(n);
    (0..n.div_ceil(per))
        .into_par_iter()
        .map(|i| {
            let mut acc = vec![(0.0f64, 0.0f64); c];
            for b in i * per..((i + 1) * per).min(n) {
                for (ch, a) in acc.iter_mut().enumerate() {
                    let (u, v) = f(b, ch);
                    a.0 += u;
                    a.1 += v;
                }
            }
            acc
        })
        .reduce_with(|mut a, b| {
            for (x, y) in a.iter_mut().zip(&b) {
                x.0 += y.0;
                x.1 += y.1;
            }
            a
        })
        .unwrap_or_else(|| vec![(0.0, 0.0); c])
}

/// Per-channel mean and biased variance of `[n, c, hw]` data, in one pass over memory:
/// sums of `x − s` and `(x − s)²` with `s` the channel's first value (the shifted-data
/// algorithm: no cancellation when the mean is large against the spread).
pub fn channel_stats(x: &[f32], n: usize, c: usize, hw: usize) -> (Vec<f32>, Vec<f32>) {
    let m = (n * hw) as f64;
    let shift: Vec<f32> = (0..c).map(|ch| x[ch * hw]).collect();
    let sums = per_channel_sums(n, c, |b, ch| {
        let r = &x[(b * c + ch) * hw..][..hw];
        let s = shift[ch];
        sum2(r, r, r, |v, _, _| {
            let d = v - s;
            (d, d * d)
        })
    });
    sums.iter()
        .zip(&shift)
        .map(|(&(sd, sdd), &s)| {
            let md = sd / m;
            let mean = s as f64 + md;
            let var = (sdd / m - md * md).max(0.0);
            (mean as f32, var as f32)
        })
        .unzip()
}

pub fn inv_std(var: &[f32], eps: f64) -> Vec<f32> {
    var.iter()
        .map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32)
        .collect()
}

/// `y = (x − mean)·inv_std·γ + β`, then ReLU if asked, parallel over samples.
#[allow(clippy::too_many_arguments)]
pub fn bn_apply(
    x: &[f32],
    [n, c, hw]: [usize; 3],
    mean: &[f32],
    istd: &[f32],
    gamma: &[f32],
    beta: &[f32],
    relu: bool,
) -> Vec<f32> {
    // Every element is written (the chunks tile the output; each row is zipped in full).
    written(n * c * hw, |y| {
        y.par_chunks_mut(c * hw)
            .zip(x.par_chunks(c * hw))
            .for_each(|(ys, xs)| {
                for ch in 0..c {
                    let scale = istd[ch] * gamma[ch];
                    let (mu, shift) = (mean[ch], beta[ch]);
                    let dst = &mut ys[ch * hw..(ch + 1) * hw];
                    let src = &xs[ch * hw..(ch + 1) * hw];
                    if relu {
                        for (d, &v) in dst.iter_mut().zip(src) {
                            d.write(((v - mu) * scale + shift).max(0.0));
                        }
                    } else {
                        for (d, &v) in dst.iter_mut().zip(src) {
                            d.write((v - mu) * scale + shift);
                        }
                    }
                }
            })
    })
}

/// dX, dγ, dβ of [`bn_apply`] with batch statistics; `y` is its output when it applied
/// the ReLU.
#[allow(clippy::too_many_arguments)]
pub fn bn_backward(
    x: &[f32],
    y: Option<&[f32]>,
    dy: &[f32],
    [n, c, hw]: [usize; 3],
    mean: &[f32],
    istd: &[f32],
    gamma: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let m = (n * hw) as f64;
    let len = n * c * hw;
    let (x, dy) = (&x[..len], &dy[..len]);
    // Per channel: dβ = Σ dY', dγ = Σ dY'·x̂ (dY' = dY through the ReLU).
    let sums = per_channel_sums(n, c, |b, ch| {
        let mu = mean[ch];
        let r = (b * c + ch) * hw..(b * c + ch + 1) * hw;
        let (xs, ds) = (&x[r.clone()], &dy[r.clone()]);
        match y {
            Some(y) => sum2(xs, ds, &y[r], |x, d, y| {
                let d = relu_mask(d, y);
                (d, d * (x - mu))
            }),
            None => sum2(xs, ds, xs, |x, d, _| (d, d * (x - mu))),
        }
    });
    let (dbeta, dgamma): (Vec<f32>, Vec<f32>) = sums
        .iter()
        .zip(istd)
        .map(|(&(s_dy, s_dyx), &is)| (s_dy as f32, (s_dyx * is as f64) as f32))
        .unzip();
    // Every element is written (the chunks tile dX; each row is zipped in full).
    let dx = written(len, |dx| {
        dx.par_chunks_mut(c * hw).enumerate().for_each(|(b, dxs)| {
            for ch in 0..c {
                let is = istd[ch];
                let a = gamma[ch] * is;
                let k1 = (dbeta[ch] as f64 / m) as f32;
                let k2 = (dgamma[ch] as f64 / m) as f32 * is;
                let mu = mean[ch];
                let r = (b * c + ch) * hw..(b * c + ch + 1) * hw;
                let (xs, ds) = (&x[r.clone()], &dy[r.clone()]);
                let out = &mut dxs[ch * hw..(ch + 1) * hw];
                match y {
                    Some(y) => {
                        for (((o, &x), &d), &y) in out.iter_mut().zip(xs).zip(ds).zip(&y[r]) {
                            o.write(a * (relu_mask(d, y) - k1 - (x - mu) * k2));
                        }
                    }
                    None => {
                        for ((o, &x), &d) in out.iter_mut().zip(xs).zip(ds) {
                            o.write(a * (d - k1 - (x - mu) * k2));
                        }
                    }
                }
            }
        })
    });
    (dx, dgamma, dbeta)
}
