// Crop centres of RandCropByPosNegLabeld from drawn foreground/background indices, one thread per crop.
//
// The random draws happen on the host (see fastpipe/ops/sample.py); the host resolves each crop's
// choice to the device address of one int64 element of its volume's fg or bg index list. This
// kernel loads that flat voxel index, unravels it (C order over X, Y, Z), clamps the centre into
// [lo, hi] per axis (MONAI's correct_crop_centers) and writes the window start max(centre - half, 0).
// One launch replaces a gather per volume plus a dozen elementwise ops.
//
// plan:    (N, 14) int64 -> element address, X, Y, Z, lo x3, hi x3, half x3, volume index (unused here)
// centers: (N, 3) int64 out; starts: (N, 3) int64 out
// Reference implementation: fastpipe/ops/sample.py (_centers_torch).

extern "C" __global__ void sample_centers(const long long* __restrict__ plan, long long* __restrict__ centers,
                                          long long* __restrict__ starts, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const long long* p = plan + (long long)i * 14;
  const long long flat = *reinterpret_cast<const long long*>(p[0]);
  const long long Y = p[2], Z = p[3];
  long long c[3];
  // floor division / modulo as torch does (indices are non-negative in valid input)
  c[2] = ((flat % Z) + Z) % Z;
  const long long q = (flat - c[2]) / Z;
  c[1] = ((q % Y) + Y) % Y;
  c[0] = (q - c[1]) / Y;
  for (int a = 0; a < 3; ++a) {
    long long v = c[a] < p[4 + a] ? p[4 + a] : c[a];
    v = v > p[7 + a] ? p[7 + a] : v;
    centers[(long long)i * 3 + a] = v;  // 64-bit: 3 * i passes 2^31 from i = 715827883
    const long long s = v - p[10 + a];
    starts[(long long)i * 3 + a] = s < 0 ? 0 : s;
  }
}
