// The low-resolution half of the fast guided filter; see fastclipseg/edges.hpp
// for the contract. Everything here works on the filter's grid (the model's
// h x w divided by the subsampling), so it costs the same whatever the image
// size, except the one pass that turns the guide into planes (grey value or
// channels) and averages them into that grid.
#include "fastclipseg/edges.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "detail.hpp"
#include "fastclipseg/postprocess.hpp"

namespace fastclipseg::edges {
namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument("edges: " + msg); }

std::string size_text(std::size_t a, std::size_t b) {
    return std::to_string(a) + " x " + std::to_string(b);
}

std::size_t guide_channels(const Params& params) { return params.mode == GuideMode::colour ? 3 : 1; }

// Pillow's convert("L") of one RGB pixel.
FCS_INLINE std::uint8_t grey_of(const std::uint8_t* rgb) {
    return static_cast<std::uint8_t>((rgb[0] * 19595u + rgb[1] * 38470u + rgb[2] * 7471u + 0x8000u) >> 16);
}

// The bins of adaptive_avg_pool2d from `in` pixels to `out` cells.
struct Bins {
    std::vector<std::size_t> start, end;
};

Bins make_bins(std::size_t in, std::size_t out) {
    Bins b;
    b.start.resize(out);
    b.end.resize(out);
    for (std::size_t i = 0; i < out; ++i) {
        // Sides are < 2^31, so the products fit.
        b.start[i] = static_cast<std::size_t>((static_cast<std::uint64_t>(i) * in) / out);
        b.end[i] = static_cast<std::size_t>(((static_cast<std::uint64_t>(i) + 1) * in + out - 1) / out);
    }
    return b;
}

// Reciprocals of the clipped window lengths along an axis of n cells.
std::vector<double> window_reciprocals(std::size_t n, std::size_t r) {
    std::vector<double> inv(n);
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t lo = i >= r ? i - r : 0, hi = std::min(i + r + 1, n);
        inv[i] = 1.0 / static_cast<double>(hi - lo);
    }
    return inv;
}

// Mean over the (2r + 1)^2 window clipped to the h x w grid, in double: a
// running sum down the columns (vectorised across the row), then a running
// sum along the rows, four rows at a time (four independent add chains: one
// chain alone waits on the add latency). The input is produced row by row by
// `row_of(y, dst)`, so products like I * p need no plane of their own.
struct BoxFilter {
    static constexpr std::size_t kGroup = 4;
    std::size_t h, w, r;
    std::vector<double> inv_h, inv_w;
    std::vector<double> acc;      // running column sums (w)
    std::vector<double> padded;   // kGroup column-mean rows, each r zeros + w + r + 1 zeros
    std::vector<double> in_rows;  // ring of input rows ((2r + 2) x w, or h x w)

    BoxFilter(std::size_t h_, std::size_t w_, std::size_t r_)
        : h(h_), w(w_), r(std::min(r_, std::max(h_, w_))), inv_h(window_reciprocals(h_, r)),
          inv_w(window_reciprocals(w_, r)), acc(w_), padded(kGroup * (w_ + 2 * r + 1)),
          in_rows(std::min(2 * r + 2, h_) * w_) {}

    template <class RowOf>
    void operator()(RowOf&& row_of, double* out) {
        const std::size_t ring = in_rows.size() / w, stride = w + 2 * r + 1;
        auto slot = [&](std::size_t y) { return in_rows.data() + (y % ring) * w; };
        std::fill(acc.begin(), acc.end(), 0.0);
        std::fill(padded.begin(), padded.end(), 0.0);
        const std::size_t first = std::min(r + 1, h);
        for (std::size_t y = 0; y < first; ++y) {
            double* src = slot(y);
            row_of(y, src);
            for (std::size_t x = 0; x < w; ++x) acc[x] += src[x];
        }
        std::size_t group_start = 0;
        for (std::size_t y = 0; y < h; ++y) {
            const double iv = inv_h[y];
            double* col = padded.data() + (y - group_start) * stride + r;
            for (std::size_t x = 0; x < w; ++x) col[x] = acc[x] * iv;
            if (y - group_start + 1 == kGroup || y + 1 == h) {
                horizontal(y + 1 - group_start, out + group_start * w);
                group_start = y + 1;
            }
            // Slide the window down: the row leaving it is still in the ring
            // (it holds 2r + 2 rows), the entering one is produced now.
            if (y >= r) {
                const double* leave = slot(y - r);
                for (std::size_t x = 0; x < w; ++x) acc[x] -= leave[x];
            }
            if (y + r + 1 < h) {
                double* enter = slot(y + r + 1);
                row_of(y + r + 1, enter);
                for (std::size_t x = 0; x < w; ++x) acc[x] += enter[x];
            }
        }
    }

    void plane(const double* in, double* out) {
        (*this)([&](std::size_t y, double* dst) { std::copy(in + y * w, in + (y + 1) * w, dst); }, out);
    }

    // Window means along `rows` padded rows (P, zeros around the column
    // means) into dst: sum(x) = P[x] + ... + P[x + 2r], and
    // sum(x + 1) = sum(x) + P[x + 2r + 1] - P[x].
    void horizontal(std::size_t rows, double* dst) {
        const std::size_t stride = w + 2 * r + 1;
        double sum[kGroup] = {};
        for (std::size_t j = 0; j < rows; ++j) {
            const double* P = padded.data() + j * stride;
            for (std::size_t k = 0; k <= 2 * r; ++k) sum[j] += P[k];
        }
        if (rows == kGroup) {
            const double *P0 = padded.data(), *P1 = P0 + stride, *P2 = P1 + stride, *P3 = P2 + stride;
            double *d0 = dst, *d1 = d0 + w, *d2 = d1 + w, *d3 = d2 + w;
            double s0 = sum[0], s1 = sum[1], s2 = sum[2], s3 = sum[3];
            for (std::size_t x = 0; x < w; ++x) {
                const double iv = inv_w[x];
                d0[x] = s0 * iv, d1[x] = s1 * iv, d2[x] = s2 * iv, d3[x] = s3 * iv;
                const std::size_t in = x + 2 * r + 1;
                s0 += P0[in] - P0[x], s1 += P1[in] - P1[x], s2 += P2[in] - P2[x], s3 += P3[in] - P3[x];
            }
        } else {
            for (std::size_t j = 0; j < rows; ++j) {
                const double* P = padded.data() + j * stride;
                double s = sum[j];
                for (std::size_t x = 0; x < w; ++x) {
                    dst[j * w + x] = s * inv_w[x];
                    s += P[x + 2 * r + 1] - P[x];
                }
            }
        }
        // The padding must stay zero for the next group; the means are overwritten.
    }
};

using Planes = std::vector<std::vector<double>>;

// Resizes `planes` to n planes of `size` values, keeping their memory.
void shape_planes(Planes& planes, std::size_t n, std::size_t size) {
    planes.resize(n);
    for (auto& plane : planes) plane.resize(size);
}

// Everything one call needs beyond its result. Taken from a pool and given
// back, so repeated calls (a video's frames) reuse the same memory: page
// faults on fresh multi-megabyte buffers would cost more than the filter.
struct Workspace {
    Planes low;     // I_low per guide channel
    Planes mean;    // box(I_low) per channel
    Planes second;  // box(I_i I_j) per channel pair i <= j, then the (co)variances
    Planes p;       // sigmoid of the logits per mask
    Planes mean_p;  // box(p) per mask, then b
    Planes corr;    // box(I_c p) per mask and channel, then cov(I_c, p), then a_c
    Planes filtered;  // per worker: box(a_c) or box(b) before it is stored as float
};
detail::Pool<Workspace> g_workspaces;

// One RGB row to guide planes: Pillow's convert("L") (grey) or the three
// channels apart (colour). Compiled for AVX2 as well, where the interleaved
// loads vectorise.
FCS_INLINE void grey_row_impl(const std::uint8_t* rgb, std::size_t n, std::uint8_t* const* out) {
    std::uint8_t* grey = out[0];
    for (std::size_t X = 0; X < n; ++X) grey[X] = grey_of(rgb + 3 * X);
}
FCS_INLINE void split_row_impl(const std::uint8_t* rgb, std::size_t n, std::uint8_t* const* out) {
    std::uint8_t *r = out[0], *g = out[1], *b = out[2];
    for (std::size_t X = 0; X < n; ++X) r[X] = rgb[3 * X], g[X] = rgb[3 * X + 1], b[X] = rgb[3 * X + 2];
}
// dst[X] = sum of `rows` rows of uint8 (stride bytes apart) at column X, for
// X < n: 16-bit partial sums (vectorise twice as wide), 256 rows at a time so
// they cannot overflow; `partial` holds n values.
FCS_INLINE void sum_rows_impl(const std::uint8_t* first, std::size_t stride, std::size_t rows, std::size_t n,
                              std::uint16_t* __restrict partial, std::uint32_t* __restrict dst) {
    for (std::size_t X = 0; X < n; ++X) dst[X] = 0;
    for (std::size_t done = 0; done < rows; done += 256) {
        for (std::size_t X = 0; X < n; ++X) partial[X] = 0;
        for (std::size_t Y = done; Y < std::min(rows, done + 256); ++Y) {
            const std::uint8_t* __restrict row = first + Y * stride;
            for (std::size_t X = 0; X < n; ++X) partial[X] = static_cast<std::uint16_t>(partial[X] + row[X]);
        }
        for (std::size_t X = 0; X < n; ++X) dst[X] += partial[X];
    }
}
using SumRows = void (*)(const std::uint8_t*, std::size_t, std::size_t, std::size_t, std::uint16_t*, std::uint32_t*);
void sum_rows_baseline(const std::uint8_t* first, std::size_t stride, std::size_t rows, std::size_t n,
                       std::uint16_t* partial, std::uint32_t* dst) {
    sum_rows_impl(first, stride, rows, n, partial, dst);
}

using RowToPlanes = void (*)(const std::uint8_t*, std::size_t, std::uint8_t* const*);
void grey_row_baseline(const std::uint8_t* rgb, std::size_t n, std::uint8_t* const* out) { grey_row_impl(rgb, n, out); }
void split_row_baseline(const std::uint8_t* rgb, std::size_t n, std::uint8_t* const* out) { split_row_impl(rgb, n, out); }
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__)) && !defined(__AVX2__)
__attribute__((target("avx2"))) void grey_row_avx2(const std::uint8_t* rgb, std::size_t n, std::uint8_t* const* out) {
    grey_row_impl(rgb, n, out);
}
__attribute__((target("avx2"))) void split_row_avx2(const std::uint8_t* rgb, std::size_t n, std::uint8_t* const* out) {
    split_row_impl(rgb, n, out);
}
__attribute__((target("avx2"))) void sum_rows_avx2(const std::uint8_t* first, std::size_t stride, std::size_t rows,
                                                   std::size_t n, std::uint16_t* partial, std::uint32_t* dst) {
    sum_rows_impl(first, stride, rows, n, partial, dst);
}
bool has_avx2() {
    static const bool yes = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") != 0;
    }();
    return yes;
}
RowToPlanes row_to_planes(bool colour) {
    if (colour) return has_avx2() ? split_row_avx2 : split_row_baseline;
    return has_avx2() ? grey_row_avx2 : grey_row_baseline;
}
SumRows sum_rows_kernel() { return has_avx2() ? sum_rows_avx2 : sum_rows_baseline; }
#else
RowToPlanes row_to_planes(bool colour) { return colour ? split_row_baseline : grey_row_baseline; }
SumRows sum_rows_kernel() { return sum_rows_baseline; }
#endif

// Averages the guide's planes (H x W bytes each) into the h x w grid with
// adaptive_avg_pool2d's bins: the bin's rows are summed down the columns
// (vectorised), then the columns are binned through one prefix sum per grid
// row. Sums are exact integers.
void average_into_grid(const std::vector<const std::uint8_t*>& planes, std::size_t H, std::size_t W,
                       std::size_t h, std::size_t w, unsigned threads, Planes& low) {
    const std::size_t used = planes.size();
    const Bins rows = make_bins(H, h), cols = make_bins(W, w);
    shape_planes(low, used, h * w);
    struct Work {
        std::vector<std::uint32_t> column;  // per channel, W (a bin has < 2^24 rows)
        std::vector<std::uint16_t> partial; // W
        std::vector<std::uint64_t> prefix;  // W + 1
    };
    const SumRows sum_rows = sum_rows_kernel();
    std::vector<Work> work(detail::parallel_workers(h, threads));
    detail::parallel_for(h, threads, [&](std::size_t y, std::size_t worker) {
        Work& s = work[worker];
        s.column.resize(used * W);
        s.partial.resize(W);
        s.prefix.resize(W + 1);
        for (std::size_t c = 0; c < used; ++c) {
            sum_rows(planes[c] + rows.start[y] * W, W, rows.end[y] - rows.start[y], W, s.partial.data(),
                     s.column.data() + c * W);
        }
        const double rows_in = static_cast<double>(rows.end[y] - rows.start[y]);
        for (std::size_t c = 0; c < used; ++c) {
            const std::uint32_t* column = s.column.data() + c * W;
            s.prefix[0] = 0;
            for (std::size_t X = 0; X < W; ++X) s.prefix[X + 1] = s.prefix[X] + column[X];
            for (std::size_t x = 0; x < w; ++x) {
                const double n = rows_in * static_cast<double>(cols.end[x] - cols.start[x]);
                low[c][y * w + x] = static_cast<double>(s.prefix[cols.end[x]] - s.prefix[cols.start[x]]) / (255.0 * n);
            }
        }
    });
}

// From the window means to a (per channel, into ws.corr) and b (into
// ws.mean_p) of mask i, cell by cell.
void solve_cells(Workspace& ws, std::size_t i, std::size_t C, double eps) {
    const std::size_t n = ws.p[i].size();
    double* b = ws.mean_p[i].data();
    double* a[3];
    for (std::size_t c = 0; c < C; ++c) {
        a[c] = ws.corr[i * C + c].data();  // box(I_c p), turned into cov(I_c, p)
        for (std::size_t k = 0; k < n; ++k) a[c][k] -= ws.mean[c][k] * b[k];
    }
    const Planes& m = ws.mean;
    const Planes& v = ws.second;  // (co)variances
    if (C == 1) {
        for (std::size_t k = 0; k < n; ++k) {
            const double a0 = a[0][k] / (v[0][k] + eps);
            a[0][k] = a0;
            b[k] -= a0 * m[0][k];
        }
        return;
    }
    // (Sigma + eps 1) a = cov, Sigma symmetric: solved by its adjugate.
    for (std::size_t k = 0; k < n; ++k) {
        const double rr = v[0][k] + eps, rg = v[1][k], rb = v[2][k];
        const double gg = v[3][k] + eps, gb = v[4][k], bb = v[5][k] + eps;
        const double i00 = gg * bb - gb * gb, i01 = rb * gb - rg * bb, i02 = rg * gb - rb * gg;
        const double i11 = rr * bb - rb * rb, i12 = rb * rg - rr * gb, i22 = rr * gg - rg * rg;
        const double inv = 1.0 / (rr * i00 + rg * i01 + rb * i02);
        const double c0 = a[0][k], c1 = a[1][k], c2 = a[2][k];
        const double a0 = (i00 * c0 + i01 * c1 + i02 * c2) * inv;
        const double a1 = (i01 * c0 + i11 * c1 + i12 * c2) * inv;
        const double a2 = (i02 * c0 + i12 * c1 + i22 * c2) * inv;
        a[0][k] = a0, a[1][k] = a1, a[2][k] = a2;
        b[k] -= a0 * m[0][k] + a1 * m[1][k] + a2 * m[2][k];
    }
}

}  // namespace

void check(const Guide& guide, const Params& params, std::size_t height, std::size_t width) {
    if (params.radius < 1 || params.radius > kMaxRadius) {
        fail("radius " + std::to_string(params.radius) + " is outside [1, " + std::to_string(kMaxRadius) + "]");
    }
    if (params.subsample < 1 || params.subsample > kMaxSubsample) {
        fail("subsample " + std::to_string(params.subsample) + " is outside [1, " + std::to_string(kMaxSubsample) + "]");
    }
    if (!std::isfinite(params.eps) || params.eps <= 0.0) {
        fail("eps " + std::to_string(params.eps) + " must be finite and > 0");
    }
    if (guide.channels != 1 && guide.channels != 3) {
        fail("the guide image has " + std::to_string(guide.channels) + " channels; expected 1 (grey) or 3 (RGB)");
    }
    if (params.mode == GuideMode::colour && guide.channels != 3) {
        fail("the colour guide needs an RGB image (3 channels), got 1 channel");
    }
    if (guide.height != height || guide.width != width) {
        fail("the guide image is " + size_text(guide.height, guide.width) + " but the output is " +
             size_text(height, width) + ": guide with the image itself, at its own size");
    }
    if (guide.pixels == nullptr) fail("the guide image pointer is null");
    const std::uint64_t need = static_cast<std::uint64_t>(height) * width * guide.channels;
    if (guide.size < need) {
        fail("the guide buffer holds " + std::to_string(guide.size) + " bytes but " +
             size_text(height, width) + " x " + std::to_string(guide.channels) + " needs " +
             std::to_string(need));
    }
}

void coefficients_into(const float* logits, std::size_t logits_size, std::size_t k, std::size_t h,
                       std::size_t w, const Guide& guide, const Params& params, unsigned threads_in,
                       Coefficients& out) {
    check(guide, params, guide.height, guide.width);
    if (h == 0 || w == 0) fail("the logit grid " + size_text(h, w) + " is empty");
    const std::uint64_t logit_plane = static_cast<std::uint64_t>(h) * w;
    if (k > std::numeric_limits<std::size_t>::max() / (4 * logit_plane)) fail("K x h x w overflows");
    if (logits_size < k * logit_plane) {
        fail("logits buffer holds " + std::to_string(logits_size) + " floats but K x h x w needs " +
             std::to_string(k * logit_plane));
    }
    // The filter's grid: the model's, subsampled (at least one cell a side).
    const std::size_t fh = std::max<std::size_t>(1, h / params.subsample);
    const std::size_t fw = std::max<std::size_t>(1, w / params.subsample);
    const std::size_t plane = fh * fw;
    if (k > 0 && logits == nullptr) fail("logits pointer is null");
    const unsigned threads = std::min(threads_in == 0 ? postprocess::default_threads() : threads_in,
                                      postprocess::kMaxThreads);
    const std::size_t H = guide.height, W = guide.width, C = guide_channels(params);
    out.planes = C + 1;
    out.height = fh;
    out.width = fw;
    out.planes_u8.clear();  // keeps its memory
    out.data.resize(k * out.planes * plane);
    auto lease = g_workspaces.take();
    Workspace& ws = *lease;

    // The guide as planes (one full-size pass: the grey value, or the channels
    // apart), then averaged into the filter's grid.
    if (guide.channels == 3) {
        out.planes_u8.resize(C * H * W);
        const RowToPlanes convert = row_to_planes(C == 3);
        const std::size_t band = std::max<std::size_t>(1, (H + 4 * threads - 1) / (4 * threads));
        detail::parallel_for((H + band - 1) / band, threads, [&](std::size_t item, std::size_t) {
            for (std::size_t Y = item * band; Y < std::min(H, (item + 1) * band); ++Y) {
                std::uint8_t* rows[3];
                for (std::size_t c = 0; c < C; ++c) rows[c] = out.planes_u8.data() + c * H * W + Y * W;
                convert(guide.pixels + Y * W * 3, W, rows);
            }
        });
    }
    std::vector<const std::uint8_t*> planes(C);
    for (std::size_t c = 0; c < C; ++c) {
        planes[c] = out.planes_u8.empty() ? guide.pixels : out.planes_u8.data() + c * H * W;
    }
    average_into_grid(planes, H, W, fh, fw, threads, ws.low);

    // Window means that need only the guide and p: the guide's channels and
    // channel products, and per mask p and I_c p. One box filter per item.
    std::vector<std::pair<std::size_t, std::size_t>> pairs;
    for (std::size_t i = 0; i < C; ++i)
        for (std::size_t j = i; j < C; ++j) pairs.emplace_back(i, j);
    shape_planes(ws.mean, C, plane);
    shape_planes(ws.second, pairs.size(), plane);
    shape_planes(ws.p, k, plane);
    shape_planes(ws.mean_p, k, plane);
    shape_planes(ws.corr, k * C, plane);
    const Bins rows = make_bins(h, fh), cols = make_bins(w, fw);
    detail::parallel_for(k, threads, [&](std::size_t i, std::size_t) {
        // The post-processing kernel's float32 sigmoid (vectorised; NaN counts as 0),
        // averaged into the filter's grid with adaptive_avg_pool2d's bins.
        std::vector<float> row(w);
        std::vector<double> sums(fw);
        double* p = ws.p[i].data();
        for (std::size_t y = 0; y < fh; ++y) {
            std::fill(sums.begin(), sums.end(), 0.0);
            for (std::size_t Y = rows.start[y]; Y < rows.end[y]; ++Y) {
                const float* x = logits + i * logit_plane + Y * w;
                for (std::size_t j = 0; j < w; ++j) row[j] = detail::sigmoid1(x[j]);  // (vectorises alone)
                for (std::size_t c = 0; c < fw; ++c) {
                    double sum = 0.0;
                    for (std::size_t X = cols.start[c]; X < cols.end[c]; ++X) sum += row[X] == row[X] ? row[X] : 0.0;
                    sums[c] += sum;
                }
            }
            const double rows_in = static_cast<double>(rows.end[y] - rows.start[y]);
            for (std::size_t c = 0; c < fw; ++c) {
                p[y * fw + c] = sums[c] / (rows_in * static_cast<double>(cols.end[c] - cols.start[c]));
            }
        }
    });
    const std::size_t guide_items = C + pairs.size(), mask_items = 1 + C;
    const std::size_t workers = detail::parallel_workers(guide_items + k * mask_items, threads);
    std::vector<BoxFilter> boxes(workers, BoxFilter(fh, fw, params.radius));
    const auto product = [fw](const double* a, const double* b) {
        return [a, b, fw](std::size_t y, double* dst) {
            for (std::size_t x = 0; x < fw; ++x) dst[x] = a[y * fw + x] * b[y * fw + x];
        };
    };
    detail::parallel_for(guide_items + k * mask_items, threads, [&](std::size_t item, std::size_t worker) {
        BoxFilter& box = boxes[worker];
        if (item < C) return box.plane(ws.low[item].data(), ws.mean[item].data());
        if (item < guide_items) {
            const auto [i, j] = pairs[item - C];
            return box(product(ws.low[i].data(), ws.low[j].data()), ws.second[item - C].data());
        }
        const std::size_t i = (item - guide_items) / mask_items, j = (item - guide_items) % mask_items;
        if (j == 0) return box.plane(ws.p[i].data(), ws.mean_p[i].data());
        box(product(ws.low[j - 1].data(), ws.p[i].data()), ws.corr[i * C + j - 1].data());
    });
    for (std::size_t q = 0; q < pairs.size(); ++q) {  // second moments -> (co)variances
        const auto [i, j] = pairs[q];
        for (std::size_t c = 0; c < plane; ++c) ws.second[q][c] -= ws.mean[i][c] * ws.mean[j][c];
    }
    detail::parallel_for(k, threads, [&](std::size_t i, std::size_t) { solve_cells(ws, i, C, params.eps); });

    // The window means of a and b are the coefficients; A is scaled to the raw uint8 guide.
    shape_planes(ws.filtered, detail::parallel_workers(k * out.planes, threads), plane);
    detail::parallel_for(k * out.planes, threads, [&](std::size_t item, std::size_t worker) {
        const std::size_t i = item / out.planes, c = item % out.planes;
        std::vector<double>& scratch = ws.filtered[worker];
        const double* src = c < C ? ws.corr[i * C + c].data() : ws.mean_p[i].data();
        boxes[worker].plane(src, scratch.data());
        const double scale = c < C ? 1.0 / 255.0 : 1.0;
        float* dst = out.data.data() + (i * out.planes + c) * plane;
        for (std::size_t q = 0; q < plane; ++q) dst[q] = static_cast<float>(scratch[q] * scale);
    });
}

Coefficients coefficients(const float* logits, std::size_t logits_size, std::size_t k,
                          std::size_t h, std::size_t w, const Guide& guide, const Params& params,
                          unsigned threads) {
    Coefficients out;
    coefficients_into(logits, logits_size, k, h, w, guide, params, threads, out);
    return out;
}

std::array<float, 3> probability_cuts(double t, double offset) {
    postprocess::stability_thresholds(t, offset);  // validates both
    const float cut = detail::round_down(t);
    if (t == 0.0 || t == 1.0) return {cut, cut, cut};
    const double logit = std::log(t / (1.0 - t));
    const auto sigmoid = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
    return {cut, detail::round_down(sigmoid(logit - offset)), detail::round_down(sigmoid(logit + offset))};
}

}  // namespace fastclipseg::edges
