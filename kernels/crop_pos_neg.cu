// Batched crop for RandCropByPosNegLabeld: every crop of every volume of a batch in one launch, with
// the random suffix fused in: flips, 90-degree rotations (a signed permutation of the axes), the pad
// of a SpatialPadd absorbed into the gather, and the per-crop affine intensity.
//
// One thread row (threadIdx.y) per output row (n, c, i, j); the warp (threadIdx.x) walks the last
// output axis. Output axis a reads source axis p_a = code_a & 3 at window coordinate
// (code_a & 4) ? O_a - 1 - i_a : i_a, plus the crop's start along p_a. A source index outside the
// volume reads the pad value (use_pad) or is a bounds error: the crop's first row records the crop
// in *err (atomicMin) and nothing is read. float32 intensity is `x * scale` then `+ shift` (each
// skipped when it is the identity), rounded on its own in explicit PTX without .ftz, so it keeps denormals whatever flags the
// compiler is given (CuPy appends -ftz=true) and equals torch's two-step `mul` then `add` bit for bit.
//
// vols:  (B, 4) int64  -> device address of a contiguous (C, X, Y, Z) volume, X, Y, Z
// crops: (N, 7) int64  -> volume index, start x, y, z, axis code of output axes 0, 1, 2
// inten: (N, 2) float  -> scale, shift (read only when use_inten != 0)
// pad:   the pad value's bit pattern in the low bytes (read only when use_pad != 0)
// err:   one int, INT_MAX on entry; the smallest bad crop index on exit
// out:   (N, C, O0, O1, O2) contiguous
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
  int C, O[3], nvols, use_inten, use_pad;
  long long pad, rows;
};

// Whether crop `cr` is valid: a volume of the batch, a permutation of the axes, and (without
// padding) a window inside the volume.
__device__ __forceinline__ bool crop_ok(const long long* cr, const long long* dims, const int* p,
                                        const CropArgs& a) {
  if ((1 << p[0] | 1 << p[1] | 1 << p[2]) != 7) return false;
  if (a.use_pad) return true;
  for (int d = 0; d < 3; ++d)
    if (cr[1 + p[d]] < 0 || cr[1 + p[d]] + a.O[d] > dims[p[d]]) return false;
  return true;
}

template <typename T>
__device__ __forceinline__ void crop_rows(const long long* __restrict__ vols, const long long* __restrict__ crops,
                                          const float* __restrict__ inten, int* __restrict__ err,
                                          T* __restrict__ out, const CropArgs a) {
  const long long row = (long long)blockIdx.x * blockDim.y + threadIdx.y;
  if (row >= a.rows) return;
  const int j = (int)(row % a.O[1]);
  long long t = row / a.O[1];
  const int i = (int)(t % a.O[0]);
  t /= a.O[0];
  const long long c = t % a.C;
  const long long n = t / a.C;

  const long long* cr = crops + n * 7;
  const int p[3] = {(int)(cr[4] & 3), (int)(cr[5] & 3), (int)(cr[6] & 3)};
  const bool f[3] = {(cr[4] & 4) != 0, (cr[5] & 4) != 0, (cr[6] & 4) != 0};
  if (cr[0] < 0 || cr[0] >= a.nvols) {
    if (threadIdx.x == 0 && i == 0 && j == 0 && c == 0) atomicMin(err, (int)n);
    return;
  }
  const long long* vt = vols + cr[0] * 4;
  const long long dims[3] = {vt[1], vt[2], vt[3]};
  if (!crop_ok(cr, dims, p, a)) {
    if (threadIdx.x == 0 && i == 0 && j == 0 && c == 0) atomicMin(err, (int)n);
    return;
  }
  const long long strides[3] = {dims[1] * dims[2], dims[2], 1};
  const T* src = reinterpret_cast<const T*>(vt[0]) + c * dims[0] * strides[0];
  const long long s0 = cr[1 + p[0]] + (f[0] ? a.O[0] - 1 - i : i);
  const long long s1 = cr[1 + p[1]] + (f[1] ? a.O[1] - 1 - j : j);
  const bool row_in = s0 >= 0 && s0 < dims[p[0]] && s1 >= 0 && s1 < dims[p[1]];
  const long long base = row_in ? s0 * strides[p[0]] + s1 * strides[p[1]] : 0;
  const long long start2 = cr[1 + p[2]], dim2 = dims[p[2]], stride2 = strides[p[2]];
  const T padv = from_bits<T>(a.pad);
  T* orow = out + row * a.O[2];
  float s = 1.0f, o = 0.0f;
  if (a.use_inten) {
    s = inten[2 * n];
    o = inten[2 * n + 1];
  }
#pragma unroll 4  // several loads in flight per thread before the stores
  for (int k = threadIdx.x; k < a.O[2]; k += blockDim.x) {
    const long long s2 = start2 + (f[2] ? a.O[2] - 1 - k : k);
    const bool in = row_in && s2 >= 0 && s2 < dim2;
    const T v = in ? src[base + s2 * stride2] : padv;
    orow[k] = a.use_inten ? apply_intensity<T>(v, s, o) : v;
  }
}

#define FASTPIPE_CROP_KERNEL(NAME, T)                                                                     \
  extern "C" __global__ void NAME(const long long* __restrict__ vols, const long long* __restrict__ crops,   \
                                  const float* __restrict__ inten, int* __restrict__ err,                    \
                                  T* __restrict__ out, int C, int O0, int O1, int O2, int nvols,             \
                                  int use_inten, int use_pad, long long pad, long long rows) {               \
    const CropArgs a = {C, {O0, O1, O2}, nvols, use_inten, use_pad, pad, rows};                             \
    crop_rows<T>(vols, crops, inten, err, out, a);                                                           \
  }

// float32 (intensity allowed); other dtypes are copied bit for bit by element size.
FASTPIPE_CROP_KERNEL(crop_pos_neg_f32, float)
FASTPIPE_CROP_KERNEL(crop_pos_neg_b1, unsigned char)
FASTPIPE_CROP_KERNEL(crop_pos_neg_b2, unsigned short)
FASTPIPE_CROP_KERNEL(crop_pos_neg_b4, unsigned int)
FASTPIPE_CROP_KERNEL(crop_pos_neg_b8, unsigned long long)
