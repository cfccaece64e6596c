//! Direct convolution for inference on one image (NCHW, float32): 3×3 with padding 1 and
//! 1×1 without, stride 1 or 2, with the residual add and the ReLU that follow it in a
//! ResNet block fused in.
//!
//! Why: through im2col + GEMM, a 16-channel 3×3 convolution packs as many input panels as
//! it does multiply-adds (with M = 16 output rows each packed column serves only 16
//! products), so the narrow first stage of our networks ran at 28 % of the machine's GEMM
//! peak (BENCHMARKS.md, "Where inference spends its time"). This kernel reads the input in
//! place instead. The image is copied once into a layout where every tap of the kernel is
//! a fixed offset from the output position: for stride 1 a zero-bordered plane per channel
//! (`W' = W + 2` wide), where output position `p = y·W' + x` reads tap `(ky, kx)` at
//! `p + ky·W' + kx`; for stride 2 the bordered plane split into its four (row, column)
//! parities, each `⌈W'/2⌉` wide, where tap `(ky, kx)` is in parity `(ky % 2, kx % 2)` at
//! `p + (ky/2)·⌈W'/2⌉ + kx/2`; for a 1×1 kernel the (subsampled) image itself. One
//! contiguous vector load of `V` positions then serves `OB` output channels (one broadcast
//! weight and one fused multiply-add each). The columns past the output's width in each row
//! (2 of `W + 2` for stride 1) are computed and thrown away.
//!
//! The body is generic over a vector type per instruction set (intrinsics: the compiler
//! did not keep generic array code in registers): AVX-512 (16 lanes) or AVX + FMA (8) on
//! x86-64, chosen at run time ([`isa`]); NEON (two registers, 8 lanes) on aarch64; plain multiply
//! and add elsewhere.

use std::cell::RefCell;

/// Output channels computed together (one accumulator of `V` lanes each).
pub const OB: usize = 8;

/// The weights of one convolution, packed for [`DirectConv::run`].
#[derive(Debug, Clone, PartialEq)]
pub struct DirectConv {
    c_in: usize,
    c_out: usize,
    /// 3 (padding 1) or 1 (no padding).
    kernel: usize,
    /// 1 or 2.
    stride: usize,
    /// `[block][ci][tap][OB]`, output channels padded with zeros to a multiple of `OB`.
    weights: Vec<f32>,
    /// Per output channel, padded like `weights`.
    bias: Vec<f32>,
}

/// Where the taps of one output position are, in the prepared input.
struct Layout {
    /// Positions per output row (the output's width plus the thrown-away columns).
    row: usize,
    /// Floats per input channel.
    channel: usize,
    /// Offset of each tap from the output position, in tap order (ky, kx).
    taps: [usize; 9],
}

impl DirectConv {
    /// Packs OIHW weights `[c_out][c_in][k][k]` and an optional bias of `c_out` values;
    /// `kernel` is 3 (padding 1) or 1 (no padding), `stride` 1 or 2.
    pub fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        oihw: &[f32],
        bias: Option<&[f32]>,
    ) -> Self {
        assert!(kernel == 1 || kernel == 3, "kernel {kernel}");
        assert!(stride == 1 || stride == 2, "stride {stride}");
        let taps = kernel * kernel;
        assert_eq!(
            oihw.len(),
            c_out * c_in * taps,
            "{kernel}×{kernel} weights of {c_out}×{c_in}"
        );
        let blocks = c_out.div_ceil(OB);
        let mut weights = vec![0f32; blocks * c_in * taps * OB];
        for oc in 0..c_out {
            let (b, o) = (oc / OB, oc % OB);
            for ci in 0..c_in {
                for t in 0..taps {
                    weights[((b * c_in + ci) * taps + t) * OB + o] =
                        oihw[(oc * c_in + ci) * taps + t];
                }
            }
        }
        let mut padded_bias = vec![0f32; blocks * OB];
        if let Some(bias) = bias {
            assert_eq!(bias.len(), c_out, "bias of {c_out}");
            padded_bias[..c_out].copy_from_slice(bias);
        }
        DirectConv {
            c_in,
            c_out,
            kernel,
            stride,
            weights,
            bias: padded_bias,
        }
    }

    pub fn c_in(&self) -> usize {
        self.c_in
    }

    pub fn c_out(&self) -> usize {
        self.c_out
    }

    pub fn kernel(&self) -> usize {
        self.kernel
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Output `[height, width]` for an input of `h × w`.
    pub fn output_hw(&self, h: usize, w: usize) -> (usize, usize) {
        let pad = self.kernel / 2;
        let out = |n: usize| (n + 2 * pad - self.kernel) / self.stride + 1;
        (out(h), out(w))
    }

    /// `out = relu?(conv(x) + residual?)` for one image: `x` is `[c_in][h][w]`, `out` and
    /// `residual` are `[c_out][ho][wo]` ([`Self::output_hw`]).
    pub fn run(
        &self,
        h: usize,
        w: usize,
        x: &[f32],
        residual: Option<&[f32]>,
        relu: bool,
        out: &mut [f32],
    ) {
        self.run_on(isa(), (h, w), x, residual, relu, out)
    }

    /// [`Self::run`] on the vector path `isa` (one of [`Isa::available`]).
    pub fn run_on(
        &self,
        isa: Isa,
        (h, w): (usize, usize),
        x: &[f32],
        residual: Option<&[f32]>,
        relu: bool,
        out: &mut [f32],
    ) {
        let (ho, wo) = self.output_hw(h, w);
        assert_eq!(x.len(), self.c_in * h * w, "input of {}×{h}×{w}", self.c_in);
        assert_eq!(
            out.len(),
            self.c_out * ho * wo,
            "output of {}×{ho}×{wo}",
            self.c_out
        );
        if let Some(r) = residual {
            assert_eq!(r.len(), out.len(), "residual of {}×{ho}×{wo}", self.c_out);
        }
        PREPARED.with_borrow_mut(|buf| {
            let (xp, layout) = self.prepare(buf, (h, w), (ho, wo), x);
            let args = Args {
                k: self,
                layout: &layout,
                ho,
                wo,
                xp,
                residual,
                relu,
            };
            match self.kernel {
                3 => run_with::<9>(isa, &args, out),
                _ => run_with::<1>(isa, &args, out),
            }
        })
    }

    /// `x` rearranged so that every tap is a fixed offset from the output position (see the
    /// module's doc), plus [`SLACK`] zeros.
    fn prepare<'a>(
        &self,
        buf: &'a mut Vec<f32>,
        (h, w): (usize, usize),
        (ho, wo): (usize, usize),
        x: &[f32],
    ) -> (&'a [f32], Layout) {
        let c = self.c_in;
        let mut taps = [0usize; 9];
        let (channel, row) = match (self.kernel, self.stride) {
            (3, 1) => {
                let wp = w + 2;
                for (t, tap) in taps.iter_mut().enumerate() {
                    *tap = (t / 3) * wp + t % 3;
                }
                ((h + 2) * wp, wp)
            }
            (3, _) => {
                // The four parities of the bordered plane, each `hq × wq`.
                let (hq, wq) = ((h + 3) / 2, (w + 3) / 2);
                for (t, tap) in taps.iter_mut().enumerate() {
                    let (ky, kx) = (t / 3, t % 3);
                    *tap = ((ky % 2) * 2 + kx % 2) * hq * wq + (ky / 2) * wq + kx / 2;
                }
                (4 * hq * wq, wq)
            }
            _ => (ho * wo, wo),
        };
        let len = c * channel + SLACK;
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        let xp = &mut buf[..len];
        for ch in 0..c {
            let dst = &mut xp[ch * channel..(ch + 1) * channel];
            let src = &x[ch * h * w..(ch + 1) * h * w];
            match (self.kernel, self.stride) {
                (3, 1) => {
                    let wp = row;
                    dst[..wp].fill(0.0);
                    dst[(h + 1) * wp..].fill(0.0);
                    for y in 0..h {
                        let r = &mut dst[(y + 1) * wp..(y + 2) * wp];
                        r[0] = 0.0;
                        r[1..=w].copy_from_slice(&src[y * w..(y + 1) * w]);
                        r[w + 1] = 0.0;
                    }
                }
                (3, _) => {
                    // Bordered coordinates (py, px) = (y + 1, x + 1) go to parity
                    // (py % 2, px % 2) at (py / 2, px / 2); everything else is border.
                    let wq = row;
                    let hq = channel / 4 / wq;
                    dst.fill(0.0);
                    for y in 0..h {
                        let py = y + 1;
                        let at = (py % 2) * 2 * hq * wq + (py / 2) * wq;
                        // Even x has odd px = x + 1 (column x / 2 of the odd parity), odd x
                        // has even px (column (x + 1) / 2 of the even parity).
                        let (even, odd) = dst[at..at + hq * wq + wq].split_at_mut(hq * wq);
                        let srow = &src[y * w..(y + 1) * w];
                        for (j, pair) in srow.chunks_exact(2).enumerate() {
                            odd[j] = pair[0];
                            even[j + 1] = pair[1];
                        }
                        if w % 2 == 1 {
                            odd[w / 2] = srow[w - 1];
                        }
                    }
                }
                (_, 1) => dst.copy_from_slice(src),
                _ => {
                    for y in 0..ho {
                        for xx in 0..wo {
                            dst[y * wo + xx] = src[(2 * y) * w + 2 * xx];
                        }
                    }
                }
            }
        }
        // What the slack holds only reaches thrown-away positions; keep it finite anyway.
        xp[c * channel..].fill(0.0);
        (xp, Layout { row, channel, taps })
    }
}

thread_local! {
    /// The rearranged input, reused between calls on one thread.
    static PREPARED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Zeros after the last channel: the last vector of positions reads up to `V - 1` past
/// the end of its rows plus the taps' reach past the plane (2 for 3×3 stride 1).
const SLACK: usize = 32;

struct Args<'a> {
    k: &'a DirectConv,
    layout: &'a Layout,
    ho: usize,
    wo: usize,
    xp: &'a [f32],
    residual: Option<&'a [f32]>,
    relu: bool,
}

/// One vector register (or a pair) of `N` floats, on one instruction set. The methods are
/// `unsafe`: they need the instruction set, which the caller's `#[target_feature]` (or
/// the architecture's baseline) provides, and `load`/`store` need `N` valid floats.
trait Lanes: Copy {
    const N: usize;
    unsafe fn splat(x: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    /// `self + v · w`.
    unsafe fn fma(self, v: Self, w: Self) -> Self;
    unsafe fn store(self, p: *mut f32);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// A [`super::Lanes`] of one x86 register type and its four intrinsics.
    macro_rules! lanes {
        ($name:ident, $reg:ty, $n:literal, $splat:ident, $load:ident, $fma:ident, $store:ident) => {
            #[derive(Clone, Copy)]
            pub struct $name($reg);

            impl super::Lanes for $name {
                const N: usize = $n;
                #[inline(always)]
                unsafe fn splat(x: f32) -> Self {
                    unsafe { $name($splat(x)) }
                }
                #[inline(always)]
                unsafe fn load(p: *const f32) -> Self {
                    unsafe { $name($load(p)) }
                }
                #[inline(always)]
                unsafe fn fma(self, v: Self, w: Self) -> Self {
                    unsafe { $name($fma(v.0, w.0, self.0)) }
                }
                #[inline(always)]
                unsafe fn store(self, p: *mut f32) {
                    unsafe { $store(p, self.0) }
                }
            }
        };
    }

    lanes!(
        Avx512,
        __m512,
        16,
        _mm512_set1_ps,
        _mm512_loadu_ps,
        _mm512_fmadd_ps,
        _mm512_storeu_ps
    );
    lanes!(
        AvxFma,
        __m256,
        8,
        _mm256_set1_ps,
        _mm256_loadu_ps,
        _mm256_fmadd_ps,
        _mm256_storeu_ps
    );
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;

    /// Two NEON registers: 8 lanes, 16 of the 32 registers for the accumulators.
    #[derive(Clone, Copy)]
    pub struct Neon2(float32x4_t, float32x4_t);

    impl super::Lanes for Neon2 {
        const N: usize = 8;
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            unsafe { Neon2(vdupq_n_f32(x), vdupq_n_f32(x)) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { Neon2(vld1q_f32(p), vld1q_f32(p.add(4))) }
        }
        #[inline(always)]
        unsafe fn fma(self, v: Self, w: Self) -> Self {
            unsafe { Neon2(vfmaq_f32(self.0, v.0, w.0), vfmaq_f32(self.1, v.1, w.1)) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe {
                vst1q_f32(p, self.0);
                vst1q_f32(p.add(4), self.1);
            }
        }
    }
}

/// Plain floats, for other architectures (multiply and add, not fused).
#[cfg_attr(any(target_arch = "x86_64", target_arch = "aarch64"), allow(dead_code))]
#[derive(Clone, Copy)]
struct Plain([f32; 4]);

impl Lanes for Plain {
    const N: usize = 4;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Plain([x; 4])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Plain(unsafe { std::ptr::read_unaligned(p as *const [f32; 4]) })
    }
    #[inline(always)]
    unsafe fn fma(self, v: Self, w: Self) -> Self {
        Plain(std::array::from_fn(|l| self.0[l] + v.0[l] * w.0[l]))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        unsafe { std::ptr::write_unaligned(p as *mut [f32; 4], self.0) }
    }
}

/// A vector path of [`DirectConv::run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Plain multiply and add (the compiler's own vectorisation, if any).
    Portable,
    /// 256-bit registers with fused multiply-add: AVX and FMA. The body uses only float
    /// loads, stores, broadcasts and FMA, none of AVX2's integer instructions, so an x86
    /// CPU with AVX and FMA but no AVX2 takes it too.
    AvxFma,
    /// 512-bit registers (AVX-512F).
    Avx512f,
    /// Two 128-bit NEON registers (the aarch64 baseline).
    Neon,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::AvxFma => "avx+fma",
            Isa::Avx512f => "avx512f",
            Isa::Neon => "neon",
        }
    }

    /// `portable`, `avx+fma`, `avx512f` or `neon`.
    pub fn parse(s: &str) -> Option<Isa> {
        [Isa::Portable, Isa::AvxFma, Isa::Avx512f, Isa::Neon]
            .into_iter()
            .find(|i| i.name() == s)
    }

    /// Every path this CPU can run, slowest first (portable is always one).
    pub fn available() -> Vec<Isa> {
        let mut out = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx")
                && std::arch::is_x86_feature_detected!("fma")
            {
                out.push(Isa::AvxFma);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                out.push(Isa::Avx512f);
            }
        }
        if cfg!(target_arch = "aarch64") {
            out.push(Isa::Neon);
        }
        out
    }
}

/// The widest path allowed by [`limit_isa`] (`u8::MAX`: no limit).
static LIMIT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(u8::MAX);

/// Run no wider path than `isa` from now on, in this process: how a benchmark measures,
/// on a CPU that has AVX-512, what a CPU with only AVX and FMA (or none) would run. The
/// daemon never calls it.
pub fn limit_isa(isa: Isa) {
    LIMIT.store(isa as u8, std::sync::atomic::Ordering::Relaxed);
}

/// The vector path [`DirectConv::run`] takes on this machine: the widest of
/// [`Isa::available`] within [`limit_isa`]'s limit.
pub fn isa() -> Isa {
    let limit = LIMIT.load(std::sync::atomic::Ordering::Relaxed);
    Isa::available()
        .into_iter()
        .rfind(|&i| i as u8 <= limit || i == Isa::Portable)
        .unwrap_or(Isa::Portable)
}

/// The body on `isa`'s vector type; `isa` must be one of [`Isa::available`].
fn run_with<const T: usize>(isa: Isa, a: &Args<'_>, out: &mut [f32]) {
    assert!(
        Isa::available().contains(&isa),
        "{} is not available on this CPU",
        isa.name()
    );
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX-512F (available, asserted above).
        Isa::Avx512f => unsafe { run_avx512::<T>(a, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX and FMA (available, asserted above).
        Isa::AvxFma => unsafe { run_avx_fma::<T>(a, out) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of the aarch64 baseline.
        Isa::Neon => unsafe { run_body::<arm::Neon2, T>(a, out) },
        // SAFETY: plain floats need no instruction set.
        _ => unsafe { run_body::<Plain, T>(a, out) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn run_avx512<const T: usize>(a: &Args<'_>, out: &mut [f32]) {
    unsafe { run_body::<x86::Avx512, T>(a, out) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,fma")]
unsafe fn run_avx_fma<const T: usize>(a: &Args<'_>, out: &mut [f32]) {
    unsafe { run_body::<x86::AvxFma, T>(a, out) }
}

/// # Safety
/// `S`'s instruction set is available.
#[inline(always)]
unsafe fn run_body<S: Lanes, const T: usize>(a: &Args<'_>, out: &mut [f32]) {
    let (k, l, xp) = (a.k, a.layout, a.xp);
    let (row, wo) = (l.row, a.wo);
    let positions = a.ho * row;
    let hw = a.ho * wo;
    let taps: [usize; T] = l.taps[..T].try_into().expect("taps");
    // Every load below is inside `xp`: the last channel's last vector of positions, at the
    // farthest tap.
    let last_p0 = (positions - 1) / S::N * S::N;
    let reach = taps.iter().max().copied().unwrap_or(0);
    assert!((k.c_in - 1) * l.channel + last_p0 + reach + S::N <= xp.len());
    assert!(S::N <= 16 && k.weights.len() == k.c_out.div_ceil(OB) * k.c_in * T * OB);
    let per_block = k.c_in * T * OB;
    let mut tmp = [[0f32; 16]; OB];
    for (b, wb) in k.weights.chunks_exact(per_block).enumerate() {
        let live = OB.min(k.c_out - b * OB);
        let mut p0 = 0;
        while p0 < positions {
            // SAFETY: loads are in bounds (asserted above: p0 <= last_p0, off <= reach, and
            // the weights hold c_in · T · OB floats per block); the instruction set is the
            // caller's promise.
            unsafe {
                let mut acc: [S; OB] = std::array::from_fn(|o| S::splat(k.bias[b * OB + o]));
                for ci in 0..k.c_in {
                    let x = xp.as_ptr().add(ci * l.channel + p0);
                    let wc = wb.as_ptr().add(ci * T * OB);
                    for (t, &off) in taps.iter().enumerate() {
                        let v = S::load(x.add(off));
                        let wt = wc.add(t * OB);
                        for (o, acc) in acc.iter_mut().enumerate() {
                            *acc = acc.fma(v, S::splat(*wt.add(o)));
                        }
                    }
                }
                for (acc, t) in acc.iter().zip(tmp.iter_mut()) {
                    acc.store(t.as_mut_ptr());
                }
            }
            // The positions of this vector that are output pixels, row by row.
            let end = (p0 + S::N).min(positions);
            let mut p = p0;
            while p < end {
                let (y, x) = (p / row, p % row);
                let row_end = (p + row - x).min(end);
                if x < wo {
                    let n = (wo - x).min(row_end - p);
                    for (o, t) in tmp.iter().enumerate().take(live) {
                        let at = (b * OB + o) * hw + y * wo + x;
                        out[at..at + n].copy_from_slice(&t[p - p0..p - p0 + n]);
                    }
                }
                p = row_end;
            }
            p0 += S::N;
        }
    }
    match (a.residual, a.relu) {
        (Some(r), true) => out
            .iter_mut()
            .zip(r)
            .for_each(|(o, &r)| *o = (*o + r).max(0.0)),
        (Some(r), false) => out.iter_mut().zip(r).for_each(|(o, &r)| *o += r),
        (None, true) => out.iter_mut().for_each(|o| *o = o.max(0.0)),
        (None, false) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition: zero padding k / 2, cross-correlation, then add and ReLU.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        conv: (usize, usize, usize, usize),
        h: usize,
        w: usize,
        x: &[f32],
        wt: &[f32],
        bias: &[f32],
        residual: Option<&[f32]>,
        relu: bool,
    ) -> Vec<f32> {
        let (c_in, c_out, k, s) = conv;
        let pad = k / 2;
        let (ho, wo) = ((h + 2 * pad - k) / s + 1, (w + 2 * pad - k) / s + 1);
        let mut out = vec![0f32; c_out * ho * wo];
        for oc in 0..c_out {
            for y in 0..ho {
                for xx in 0..wo {
                    let mut acc = bias[oc] as f64;
                    for ci in 0..c_in {
                        for ky in 0..k {
                            for kx in 0..k {
                                let (iy, ix) = (y * s + ky, xx * s + kx);
                                if iy < pad || ix < pad || iy - pad >= h || ix - pad >= w {
                                    continue;
                                }
                                acc += (x[(ci * h + iy - pad) * w + ix - pad]
                                    * wt[((oc * c_in + ci) * k + ky) * k + kx])
                                    as f64;
                            }
                        }
                    }
                    let at = (oc * ho + y) * wo + xx;
                    let mut v = acc as f32 + residual.map_or(0.0, |r| r[at]);
                    if relu {
                        v = v.max(0.0);
                    }
                    out[at] = v;
                }
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12_345);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_the_definition_on_every_shape_we_run() {
        // Our networks' shapes (vision 28×28, audio 49×40), channel counts that are and are
        // not multiples of OB, planes narrower than one vector and wider than two, odd and
        // even sizes under stride 2, one row or column.
        for &(c_in, c_out, h, w) in &[
            (1, 16, 28, 28),
            (16, 16, 28, 28),
            (16, 32, 28, 28),
            (32, 32, 14, 14),
            (32, 64, 14, 14),
            (64, 64, 7, 7),
            (16, 32, 49, 40),
            (32, 64, 25, 20),
            (3, 5, 5, 9),
            (2, 11, 1, 17),
            (4, 3, 6, 1),
            (16, 32, 25, 20),
        ] {
            for (k, s) in [(3, 1), (3, 2), (1, 1), (1, 2)] {
                let wt = values(c_out * c_in * k * k, 2);
                let bias = values(c_out, 3);
                let conv = DirectConv::new(c_in, c_out, k, s, &wt, Some(&bias));
                let (ho, wo) = conv.output_hw(h, w);
                let x = values(c_in * h * w, 1);
                let res = values(c_out * ho * wo, 4);
                for (residual, relu) in [(None, false), (None, true), (Some(&res[..]), true)] {
                    let want = reference((c_in, c_out, k, s), h, w, &x, &wt, &bias, residual, relu);
                    // Every vector path this CPU has (under qemu, those of the emulated
                    // CPU: scripts/test-isa.sh).
                    for isa in Isa::available() {
                        let mut got = vec![f32::NAN; c_out * ho * wo];
                        conv.run_on(isa, (h, w), &x, residual, relu, &mut got);
                        for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                            assert!(
                                (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                                "{} {c_in}->{c_out} {h}x{w} k{k} s{s} residual {} relu {relu}: [{i}] {g} vs {e}",
                                isa.name(),
                                residual.is_some()
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_widest_available_path_is_taken_and_names_parse() {
        let all = Isa::available();
        assert_eq!(all[0], Isa::Portable);
        assert_eq!(isa(), *all.last().unwrap());
        for i in [Isa::Portable, Isa::AvxFma, Isa::Avx512f, Isa::Neon] {
            assert_eq!(Isa::parse(i.name()), Some(i));
        }
        assert_eq!(Isa::parse("avx2"), None);
        // Which path a CPU takes, printed for scripts/test-isa.sh (`--nocapture`).
        println!("isa: {} of {:?}", isa().name(), all);
    }

    #[test]
    fn a_smaller_image_after_a_larger_one_sees_zero_borders() {
        // The prepared buffer is shared between calls: a stale value in a border would
        // leak into the next image's edge pixels.
        for s in [1, 2] {
            let k = DirectConv::new(1, 1, 3, s, &[1.0; 9], None);
            let mut big = vec![0f32; 64 / (s * s)];
            k.run(8, 8, &[7.0; 64], None, false, &mut big);
            let mut small = vec![0f32; 9];
            k.run(
                3 * s,
                3 * s,
                &vec![1.0; 9 * s * s],
                None,
                false,
                &mut small[..9],
            );
            let want = if s == 1 {
                vec![4.0, 6.0, 4.0, 6.0, 9.0, 6.0, 4.0, 6.0, 4.0]
            } else {
                vec![4.0, 6.0, 6.0, 6.0, 9.0, 9.0, 6.0, 9.0, 9.0]
            };
            assert_eq!(small, want, "stride {s}");
        }
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    /// `cargo test -p lsskd-kernels --release direct::timing -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn time_the_shapes() {
        for &(c_in, c_out, h, w, k, s) in &[
            (16, 16, 28, 28, 3, 1),
            (16, 32, 28, 28, 3, 2),
            (32, 32, 14, 14, 3, 1),
            (64, 64, 7, 7, 3, 1),
            (16, 32, 28, 28, 1, 2),
        ] {
            let conv = DirectConv::new(c_in, c_out, k, s, &vec![0.01; c_out * c_in * k * k], None);
            let (ho, wo) = conv.output_hw(h, w);
            let x = vec![0.5f32; c_in * h * w];
            let mut out = vec![0f32; c_out * ho * wo];
            let n = 2000;
            let t = std::time::Instant::now();
            for _ in 0..n {
                conv.run(h, w, &x, None, true, &mut out);
            }
            let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
            let gflops = 2.0 * (c_in * c_out * k * k * ho * wo) as f64 / us / 1e3;
            println!("{c_in}->{c_out} {h}x{w} k{k} s{s}: {us:.1} us, {gflops:.0} GFLOP/s");
        }
    }
}
