// Batched crop for RandCropByPosNegLabeld: every crop of every key of a batch in one launch, with
// the random suffix fused in: flips, 90-degree rotations (a signed permutation of the axes), the pad
// of a SpatialPadd absorbed into the gather, and the per-crop affine intensity.
//
// Keys: one launch serves every key of a batch (an image, its label, ...), each with its own element
// type, output, tables and orientation codes, described by one row of `desc`; the grid is the keys'
// blocks one after the other, and a block finds its key by its index. A key's element type picks the
// copy: float32 (intensity allowed) or a bitwise copy of 1, 2, 4 or 8 bytes per element.
//
// Threads: 2^lanes_log2 lanes side by side per output row (n, c, i, j), the rest of the block on
// further rows; the launcher picks the lanes from the row's length. Output axis a reads source axis
// p_a = code_a & 3 at window coordinate (code_a & 4) ? O_a - 1 - i_a : i_a, plus the crop's start
// along p_a. A source index outside the volume reads the pad value (use_pad) or is a bounds error:
// the crop's first row records the crop in its key's *err (atomicMin) and nothing is read. float32
// intensity is `x * scale` then `+ shift` (each skipped when it is the identity), rounded on its own
// in explicit PTX without .ftz, so it keeps denormals whatever flags the compiler is given (CuPy
// appends -ftz=true) and equals torch's two-step `mul` then `add` bit for bit.
//
// Where a crop reads its last axis forward (not flipped, not permuted), elements narrower than 8
// bytes move 8 bytes per load and store: the output row in aligned 8-byte chunks, the source read as
// the aligned words that hold each chunk, funnel-shifted (any start). Other crops go element by
// element. Index maths is 32-bit in the _i32 kernel, which the launcher picks when every volume
// and output have fewer than 2^31 elements; the bounds and pad tests (any start) and the per-crop
// table offsets (2 * n passes 2^31 from 2^30 crops) stay 64-bit.
//
// desc: (nkeys, DESC_WORDS) int64, one row per key:
//   0 vols, 1 starts, 2 vidx, 3 codes, 4 inten, 5 err, 6 out: addresses; where bit (16 + slot) of
//     word 15 is set, the word is a byte offset from desc itself (tables packed after it, one copy)
//   7 pad: the pad value's bit pattern in the low bytes (read only when use_pad)
//   8 rows: output rows (N * C * O0 * O1); 9 the key's first block (ascending over the keys)
//   10 C, 11 O0, 12 O1, 13 O2, 14 nvols
//   15 flags: use_inten | use_pad << 1 | lanes_log2 << 2 | kind << 8 (0 float32, 1..4: 1, 2, 4, 8
//      bytes copied bitwise) | relative slots << 16
// The tables a key's slots point at:
//   vols:   (B, 4) int64 -> device address of a contiguous (C, X, Y, Z) volume, X, Y, Z
//   starts: (N, 3) int64 -> window start per source axis; vidx: (N,) int64 -> volume index
//   codes:  (N,) int32   -> per output axis a, bits 3a..3a+2: source axis | 4 * flipped
//   inten:  (N, 2) float -> scale, shift (read only when use_inten != 0)
//   err:    one int, INT_MAX on entry; on exit the smallest bad crop index, capped at INT_MAX - 1 (a
//           crop from 2^31 - 1 on reads as INT_MAX - 1: the flag is never lost, the host finds the crop)
//   out:    (N, C, O0, O1, O2) contiguous
// Reference implementation: fastpipe/ops/crop.py (crop_batch_torch).

__device__ __forceinline__ float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  float r;
  asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
#else
  return __fmul_rn(a, b);
#endif
}

__device__ __forceinline__ float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  float r;
  asm("add.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
#else
  return __fadd_rn(a, b);
#endif
}

template <typename T>
__device__ __forceinline__ T apply_intensity(T x, float, float) {
  return x;
}

__device__ __forceinline__ unsigned int bits_of(float f) {
  union {
    float f;
    unsigned int u;
  } v;
  v.f = f;
  return v.u;
}

// s == 1 skips the multiply and o == +-0 the add: an unchanged crop is copied exactly (-0.0 included).
// The tests compare bits, not floats: under -ftz a denormal shift would compare equal to 0.
template <>
__device__ __forceinline__ float apply_intensity<float>(float x, float s, float o) {
  if (bits_of(s) != 0x3f800000u) x = mul_rn(x, s);
  if ((bits_of(o) & 0x7fffffffu) != 0u) x = add_rn(x, o);
  return x;
}

template <typename T>
__device__ __forceinline__ T from_bits(long long bits) {
  return (T)bits;  // unsigned types of the element's size: the low bytes are the pattern
}

template <>
__device__ __forceinline__ float from_bits<float>(long long bits) {
  union {
    unsigned int u;
    float f;
  } v;
  v.u = (unsigned int)bits;
  return v.f;
}

struct CropArgs {
  int C, O[3], nvols, use_inten, use_pad, lanes_log2;
  long long pad, rows;
};

// The per-batch tables (see the header): every pointer may point into one packed parameter buffer.
struct CropTables {
  const long long* vols;
  const long long* starts;
  const long long* vidx;
  const int* codes;
  const float* inten;
  int* err;
};

// Whether a crop is valid: a volume of the batch, a permutation of the axes, and (without
// padding) a window inside the volume.
__device__ __forceinline__ bool crop_ok(const long long* st, const long long* dims, const int* p,
                                        const CropArgs& a) {
  if ((1 << p[0] | 1 << p[1] | 1 << p[2]) != 7) return false;
  if (a.use_pad) return true;
  for (int d = 0; d < 3; ++d)  // start + O > dim, written so that no start can overflow it
    if (st[p[d]] < 0 || st[p[d]] > dims[p[d]] - a.O[d]) return false;
  return true;
}

// 8 bytes starting at p (aligned to its element only), from the aligned 8-byte words holding them.
// Only words that hold a needed byte are read, so the load stays inside the volume's allocation.
__device__ __forceinline__ unsigned long long load8(const void* p) {
  const unsigned long long addr = reinterpret_cast<unsigned long long>(p);
  const unsigned long long* w = reinterpret_cast<const unsigned long long*>(addr & ~7ull);
  const unsigned sh = (unsigned)(addr & 7ull) * 8u;
#ifdef __CUDA_ARCH__
  const unsigned long long lo = __ldg(w);
  return sh == 0 ? lo : (lo >> sh) | (__ldg(w + 1) << (64u - sh));
#else
  unsigned long long lo, hi;
  __builtin_memcpy(&lo, w, 8);
  if (sh == 0) return lo;
  __builtin_memcpy(&hi, w + 1, 8);
  return (lo >> sh) | (hi << (64u - sh));
#endif
}

__device__ __forceinline__ void store8(void* p, unsigned long long v) {
#ifdef __CUDA_ARCH__
  *reinterpret_cast<unsigned long long*>(p) = v;
#else
#ifdef FASTPIPE_HOST_STORE8  // host emulation in the tests: counts the stores and misaligned ones
  FASTPIPE_HOST_STORE8(p);
#endif
  __builtin_memcpy(p, &v, 8);
#endif
}

// One output row: O2 elements of the last output axis. `rs` is the source row (valid when the row is
// inside the volume), k in [klo, khi) reads inside along the last source axis, elsewhere the pad.
template <typename T, typename I>
struct Row {
  const T* rs;
  T* orow;
  I st2, stride2;
  int O2, klo, khi;
  bool f2, use_inten;
  T padv;
  float s, o;

  __device__ __forceinline__ T at(int k) const {
    const T v = (k >= klo && k < khi) ? rs[(st2 + (f2 ? O2 - 1 - k : k)) * stride2] : padv;
    return use_inten ? apply_intensity<T>(v, s, o) : v;
  }

  // Any orientation: one element per step, `lanes` threads side by side along the row.
  __device__ __forceinline__ void scalar(int lane, int lanes) const {
#pragma unroll 4  // several loads in flight per thread before the stores
    for (int k = lane; k < O2; k += lanes) orow[k] = at(k);
  }

  // The last axis read forward (no flip, not permuted): 8 bytes per load and store. Elements before
  // the first 8-byte-aligned output address (head) and after the last whole chunk (tail) go one by one.
  __device__ __forceinline__ void vector(int lane, int lanes) const {
    constexpr int V = 8 / sizeof(T);
    const unsigned ob = (unsigned)(reinterpret_cast<unsigned long long>(orow) & 7ull);
    const int h0 = (int)(((8u - ob) & 7u) / sizeof(T)), h = h0 < O2 ? h0 : O2;
    const int nv = (O2 - h) / V, tail = h + nv * V;
    for (int k = lane; k < h; k += lanes) orow[k] = at(k);
    for (int k = tail + lane; k < O2; k += lanes) orow[k] = at(k);
    for (int q = lane; q < nv; q += lanes) {
      const int k = h + q * V;
      union {
        unsigned long long u;
        T e[V];
      } x;
      if (k >= klo && k + V <= khi) {
        x.u = load8(rs + (st2 + k));
        if (use_inten)
#pragma unroll
          for (int e = 0; e < V; ++e) x.e[e] = apply_intensity<T>(x.e[e], s, o);
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e) x.e[e] = at(k + e);
      }
      store8(orow + k, x.u);
    }
  }
};

// The window coordinates w in [0, O) whose source index start + w lies in [0, dim), as output
// indices k (k = O - 1 - w when flipped): [*klo, *khi), empty when none. 64-bit: any start.
__device__ __forceinline__ void inside(long long start, long long dim, int O, bool flip, int* klo, int* khi) {
  if (start >= dim || start <= -(long long)O) {  // first: -start and dim - start below cannot overflow
    *klo = *khi = 0;
    return;
  }
  const long long lo = start < 0 ? -start : 0;
  const long long hi = dim - start < O ? dim - start : O;
  if (lo >= hi) {
    *klo = *khi = 0;
  } else {
    *klo = (int)(flip ? O - hi : lo);
    *khi = (int)(flip ? O - lo : hi);
  }
}

// The err flag for crop n: n itself below INT_MAX - 1, else INT_MAX - 1 (INT_MAX means "no error", and
// a plain (int) cast of a 64-bit n would wrap onto it for some n and lose the flag).
__device__ __forceinline__ int err_flag(long long n) { return n < 0x7ffffffeLL ? (int)n : 0x7ffffffe; }

// I: the index type of offsets inside one volume and the output (int when all fit, else long long).
// `block`: the block's index among its key's blocks.
template <typename T, typename I>
__device__ __forceinline__ void crop_rows(const CropTables tb, T* __restrict__ out, const CropArgs a,
                                          long long block) {
  const int t = (int)(threadIdx.y * blockDim.x + threadIdx.x);
  const int lanes = 1 << a.lanes_log2, lane = t & (lanes - 1);
  const long long row64 = block * (long long)((blockDim.x * blockDim.y) >> a.lanes_log2) + (t >> a.lanes_log2);
  if (row64 >= a.rows) return;
  const I row = (I)row64;
  const int j = (int)(row % (I)a.O[1]);
  I q = row / (I)a.O[1];
  const int i = (int)(q % (I)a.O[0]);
  q /= (I)a.O[0];
  const I c = q % (I)a.C;
  const I n = q / (I)a.C;

  const long long* st = tb.starts + 3 * (long long)n;
  const long long v = tb.vidx[n];
  const int code = tb.codes[n];
  const int p[3] = {code & 3, (code >> 3) & 3, (code >> 6) & 3};
  const bool f[3] = {(code & 4) != 0, (code & 32) != 0, (code & 256) != 0};
  const bool first = lane == 0 && i == 0 && j == 0 && c == 0;
  if (v < 0 || v >= a.nvols) {
    if (first) atomicMin(tb.err, err_flag(n));
    return;
  }
  const long long* vt = tb.vols + v * 4;
  const long long dims[3] = {vt[1], vt[2], vt[3]};
  if (!crop_ok(st, dims, p, a)) {
    if (first) atomicMin(tb.err, err_flag(n));
    return;
  }
  const long long s0 = st[p[0]] + (f[0] ? a.O[0] - 1 - i : i);
  const long long s1 = st[p[1]] + (f[1] ? a.O[1] - 1 - j : j);
  const bool row_in = s0 >= 0 && s0 < dims[p[0]] && s1 >= 0 && s1 < dims[p[1]];
  const I strides[3] = {(I)dims[1] * (I)dims[2], (I)dims[2], 1};
  Row<T, I> r;
  r.rs = reinterpret_cast<const T*>(vt[0]);
  if (row_in)  // every offset below the volume's element count: exact in I
    r.rs += c * (I)dims[0] * strides[0] + (I)s0 * strides[p[0]] + (I)s1 * strides[p[1]];
  r.orow = out + row * (I)a.O[2];
  r.st2 = (I)st[p[2]];  // exact whenever an element is read (then -O2 < start < dim)
  r.stride2 = strides[p[2]];
  r.O2 = a.O[2];
  r.f2 = f[2];
  inside(st[p[2]], dims[p[2]], a.O[2], f[2], &r.klo, &r.khi);
  if (!row_in) r.klo = r.khi = 0;
  r.use_inten = a.use_inten != 0;
  r.padv = from_bits<T>(a.pad);
  r.s = a.use_inten ? tb.inten[2 * (long long)n] : 1.0f;  // 64-bit: n may pass 2^30 in the _i32 kernel
  r.o = a.use_inten ? tb.inten[2 * (long long)n + 1] : 0.0f;
  if (sizeof(T) < 8 && p[2] == 2 && !f[2])
    r.vector(lane, lanes);
  else
    r.scalar(lane, lanes);
}

#define DESC_WORDS 16

// Slot `slot` of a key's row: an address, or a byte offset from desc where its flag bit says so.
__device__ __forceinline__ long long slot_addr(const long long* desc, const long long* d, int slot) {
  const bool rel = (d[15] >> (16 + slot)) & 1;
  return rel ? reinterpret_cast<long long>(desc) + d[slot] : d[slot];
}

template <typename P>
__device__ __forceinline__ P* slot_ptr(const long long* desc, const long long* d, int slot) {
  return reinterpret_cast<P*>(slot_addr(desc, d, slot));
}

template <typename I>
__device__ __forceinline__ void crop_keys(const long long* desc, int nkeys) {
  int k = 0;  // the key whose blocks hold this one (a batch has a few keys)
  while (k + 1 < nkeys && (long long)blockIdx.x >= desc[(k + 1) * DESC_WORDS + 9]) ++k;
  const long long* d = desc + (long long)k * DESC_WORDS;
  const long long flags = d[15];
  const CropArgs a = {(int)d[10], {(int)d[11], (int)d[12], (int)d[13]}, (int)d[14], (int)(flags & 1),
                      (int)((flags >> 1) & 1), (int)((flags >> 2) & 7), d[7], d[8]};
  const CropTables tb = {slot_ptr<const long long>(desc, d, 0), slot_ptr<const long long>(desc, d, 1),
                         slot_ptr<const long long>(desc, d, 2), slot_ptr<const int>(desc, d, 3),
                         slot_ptr<const float>(desc, d, 4),      slot_ptr<int>(desc, d, 5)};
  const long long block = (long long)blockIdx.x - d[9];
  switch ((flags >> 8) & 7) {
    case 0: crop_rows<float, I>(tb, slot_ptr<float>(desc, d, 6), a, block); break;
    case 1: crop_rows<unsigned char, I>(tb, slot_ptr<unsigned char>(desc, d, 6), a, block); break;
    case 2: crop_rows<unsigned short, I>(tb, slot_ptr<unsigned short>(desc, d, 6), a, block); break;
    case 3: crop_rows<unsigned int, I>(tb, slot_ptr<unsigned int>(desc, d, 6), a, block); break;
    default: crop_rows<unsigned long long, I>(tb, slot_ptr<unsigned long long>(desc, d, 6), a, block); break;
  }
}

// _i32: every offset inside a volume and the output fits in 31 bits (the launcher checks); _i64: any size.
extern "C" __global__ void crop_pos_neg_i32(const long long* __restrict__ desc, int nkeys) {
  crop_keys<int>(desc, nkeys);
}

extern "C" __global__ void crop_pos_neg_i64(const long long* __restrict__ desc, int nkeys) {
  crop_keys<long long>(desc, nkeys);
}
