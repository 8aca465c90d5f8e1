// COCO RLE kernels; see fastclipseg/rle.hpp for the format and conventions.
#include "fastclipseg/rle.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <utility>

#include "detail.hpp"

namespace fastclipseg::rle {
namespace {

using detail::clz64;
using detail::ctz64;
using detail::lowest_byte;

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument("RLE: " + msg); }

// ---------------------------------------------------------------------------
// Varint writer: pycocotools rleToString, streamed one count at a time so the
// encoder never materialises the counts array.
// ---------------------------------------------------------------------------
class StringWriter {
public:
    explicit StringWriter(std::string& out) : out_(out), len_(out.size()) {}

    void push(std::uint64_t count) {
        if (count > kMaxCount) {
            fail("count #" + std::to_string(index_) + " = " + std::to_string(count) +
                 " exceeds the maximum run length " + std::to_string(kMaxCount));
        }
        // Write through a raw pointer into pre-grown space: push_back's
        // per-char capacity check and terminator store dominate on masks with
        // many short runs. A count needs at most kMaxVarintChars chars.
        if (out_.size() - len_ < kMaxVarintChars) {
            out_.resize(std::max<std::size_t>(2 * out_.size(), len_ + 64));
        }
        char* dst = &out_[len_];
        // Both operands are <= kMaxCount < 2^59, so the difference cannot overflow.
        std::int64_t x = static_cast<std::int64_t>(count);
        if (index_ > 2) x -= static_cast<std::int64_t>(prev2_);
        bool more = true;
        while (more) {
            int c = static_cast<int>(x & 0x1f);
            x >>= 5;  // arithmetic shift: keeps the sign for negative deltas
            // Stop once the remaining bits are pure sign extension of bit 4.
            more = (c & 0x10) ? x != -1 : x != 0;
            if (more) c |= 0x20;
            *dst++ = static_cast<char>(c + 48);
        }
        len_ = static_cast<std::size_t>(dst - out_.data());
        prev2_ = prev1_;
        prev1_ = count;
        ++index_;
    }

    // Trims the spare space; call once after the last push.
    void finish() { out_.resize(len_); }

private:
    std::string& out_;
    std::size_t len_;
    std::uint64_t prev1_ = 0;
    std::uint64_t prev2_ = 0;
    std::size_t index_ = 0;
};

// ---------------------------------------------------------------------------
// Boundary scanning, 8 pixels at a time. A boundary is a pixel whose
// foreground-ness differs from the pixel before it in column-major order;
// consecutive boundaries delimit the runs. Words without a boundary (most of
// a real mask) cost a handful of ALU ops; each boundary costs one ctz.
// ---------------------------------------------------------------------------
constexpr std::uint64_t kOnes = 0x0101010101010101ULL;
constexpr std::uint64_t kHighs = 0x8080808080808080ULL;

// 8 bytes as a little-endian word (byte i in bits 8i..8i+7) on any host.
inline std::uint64_t load8(const std::uint8_t* p) {
    std::uint64_t v;
    std::memcpy(&v, p, 8);  // unaligned-safe; compiles to a single load
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

// High bit of each byte set iff that byte is nonzero (no cross-byte carries:
// (x & 0x7f) + 0x7f <= 0xfe).
inline std::uint64_t nonzero_bits(std::uint64_t x) {
    constexpr std::uint64_t low7 = 0x7f7f7f7f7f7f7f7fULL;
    return (((x & low7) + low7) | x) & kHighs;
}

// High bit of each ZERO byte set (the classic exact "has a zero byte" test).
inline std::uint64_t has_zero(std::uint64_t x) { return (x - kOnes) & ~x & kHighs; }

// Run-length state carried across columns (runs continue from the bottom of
// one column to the top of the next).
struct RunState {
    std::uint64_t prev = 0;       // 0x80 if the previous pixel is foreground, else 0
    std::uint64_t boundary = 0;   // column-major position where the current run began
};

inline void emit_boundary(std::uint64_t pos, RunState& st, StringWriter& writer) {
    writer.push(pos - st.boundary);
    st.boundary = pos;
}

// Scans one contiguous column whose first pixel is at column-major position
// `base`.
inline void scan_column(const std::uint8_t* col, std::size_t h, std::uint64_t base,
                        RunState& st, StringWriter& writer) {
    std::size_t i = 0;
    while (i + 8 <= h) {
        // Skip 32 pixels at a time while they continue the current run: this
        // is where a real mask spends nearly all its time.
        if (st.prev == 0) {
            while (i + 32 <= h && (load8(col + i) | load8(col + i + 8) | load8(col + i + 16) |
                                   load8(col + i + 24)) == 0) {
                i += 32;
            }
        } else {
            while (i + 32 <= h && (has_zero(load8(col + i)) | has_zero(load8(col + i + 8)) |
                                   has_zero(load8(col + i + 16)) |
                                   has_zero(load8(col + i + 24))) == 0) {
                i += 32;
            }
        }
        if (i + 8 > h) break;
        const std::uint64_t nz = nonzero_bits(load8(col + i));
        // Compare each byte with the one before it (the previous word's last
        // byte, carried in st.prev, precedes byte 0).
        std::uint64_t diff = nz ^ ((nz << 8) | st.prev);
        st.prev = (nz >> 56) & 0x80u;
        while (diff != 0) {
            emit_boundary(base + i + lowest_byte(diff), st, writer);
            diff &= diff - 1;
        }
        i += 8;
    }
    for (; i < h; ++i) {
        const std::uint64_t v = col[i] != 0 ? 0x80u : 0u;
        if (v != st.prev) emit_boundary(base + i, st, writer);
        st.prev = v;
    }
}

// Reusable buffers, so a batch allocates once rather than once per mask.
struct Scratch {
    std::vector<std::uint8_t> block;       // transposed columns (generic strides)
    std::vector<std::uint32_t> trans_col;  // row path: transition columns, row-major order
    std::vector<std::size_t> row_end;      // row path: end of each row's span in trans_col
    std::vector<std::size_t> col_start;    // row path: counting-sort cursors per column
    std::vector<std::uint32_t> trans_row;  // row path: transition rows grouped by column
};

// Contiguous rows (C order): instead of walking strided columns, find the
// column-major run boundaries row by row. A boundary is a pixel whose value
// differs from the pixel above it (or, in row 0, from the bottom of the
// previous column). Scanning rows is sequential and 8 bytes at a time;
// boundaries are then bucketed by column (counting sort) to emit runs in
// column-major order. Cost: one pass over the mask plus O(#boundaries).
void encode_rows(const std::uint8_t* data, std::size_t h, std::size_t w,
                 std::ptrdiff_t row_stride, Scratch& s, StringWriter& writer) {
    auto& cols = s.trans_col;
    auto& start = s.col_start;
    cols.clear();
    s.row_end.resize(h);
    start.assign(w + 1, 0);
    std::size_t* count = start.data() + 1;  // count[c]: boundaries in column c

    const std::uint8_t* bottom = data + static_cast<std::ptrdiff_t>(h - 1) * row_stride;
    for (std::size_t c = 0; c < w; ++c) {
        const bool before = c > 0 && bottom[c - 1] != 0;  // COCO starts with background
        if ((data[c] != 0) != before) {
            cols.push_back(static_cast<std::uint32_t>(c));
            ++count[c];
        }
    }
    s.row_end[0] = cols.size();
    for (std::size_t r = 1; r < h; ++r) {
        const std::uint8_t* cur = data + static_cast<std::ptrdiff_t>(r) * row_stride;
        const std::uint8_t* prev = cur - row_stride;
        std::size_t c = 0;
        while (c + 8 <= w) {
            // Rows of a real mask mostly repeat the row above: skip identical
            // bytes 32 at a time before looking at foreground-ness.
            while (c + 32 <= w &&
                   ((load8(cur + c) ^ load8(prev + c)) | (load8(cur + c + 8) ^ load8(prev + c + 8)) |
                    (load8(cur + c + 16) ^ load8(prev + c + 16)) |
                    (load8(cur + c + 24) ^ load8(prev + c + 24))) == 0) {
                c += 32;
            }
            if (c + 8 > w) break;
            std::uint64_t diff = nonzero_bits(load8(cur + c)) ^ nonzero_bits(load8(prev + c));
            while (diff != 0) {
                const std::size_t j = c + lowest_byte(diff);
                cols.push_back(static_cast<std::uint32_t>(j));
                ++count[j];
                diff &= diff - 1;
            }
            c += 8;
        }
        for (; c < w; ++c) {
            if ((cur[c] != 0) != (prev[c] != 0)) {
                cols.push_back(static_cast<std::uint32_t>(c));
                ++count[c];
            }
        }
        s.row_end[r] = cols.size();
    }

    // Counting sort by column; rows stay ascending within a column because
    // rows are visited in order.
    for (std::size_t c = 0; c < w; ++c) start[c + 1] += start[c];
    s.trans_row.resize(cols.size());
    std::size_t i = 0;
    for (std::size_t r = 0; r < h; ++r) {
        for (const std::size_t end = s.row_end[r]; i < end; ++i) {
            s.trans_row[start[cols[i]]++] = static_cast<std::uint32_t>(r);
        }
    }
    // Each cursor start[c] now points at the end of column c's bucket.
    std::uint64_t last = 0;
    std::size_t k = 0;
    for (std::size_t c = 0; c < w; ++c) {
        const std::uint64_t base = static_cast<std::uint64_t>(c) * h;
        for (const std::size_t end = start[c]; k < end; ++k) {
            const std::uint64_t pos = base + s.trans_row[k];
            writer.push(pos - last);
            last = pos;
        }
    }
    writer.push(static_cast<std::uint64_t>(h) * w - last);
}

// Columns gathered per block when neither rows nor columns are contiguous. A
// block of 64 columns costs 64*h bytes of scratch (64 KiB for h=1024), which
// stays in L2 while we transpose into it and scan it.
constexpr std::size_t kBlockCols = 64;

void encode_into(const std::uint8_t* data, std::size_t h, std::size_t w,
                 std::ptrdiff_t row_stride, std::ptrdiff_t col_stride, Scratch& scratch,
                 std::string& out) {
    checked_area(h, w);
    StringWriter writer(out);
    if (h == 0 || w == 0) {
        writer.push(0);
        writer.finish();
        return;
    }
    if (data == nullptr) fail("mask data pointer is null");
    // A single row is one column-major sequence of length w with stride
    // col_stride; treating it as one column lets C-order 1xN rows hit the
    // contiguous-column path below.
    if (h == 1) {
        h = w;
        w = 1;
        row_stride = col_stride;
        col_stride = 0;
    }
    constexpr std::size_t kU32 = 0xffffffffu;
    if (row_stride != 1 && col_stride == 1 && h <= kU32 && w <= kU32) {
        encode_rows(data, h, w, row_stride, scratch, writer);
        writer.finish();
        return;
    }
    RunState st;
    if (row_stride == 1) {
        // Columns are contiguous (Fortran order, or any view of one): scan in place.
        for (std::size_t c = 0; c < w; ++c) {
            scan_column(data + static_cast<std::ptrdiff_t>(c) * col_stride, h,
                        static_cast<std::uint64_t>(c) * h, st, writer);
        }
    } else {
        // Generic strides: transpose a block of columns into contiguous
        // scratch, then scan the scratch columns. One pass over the mask.
        const std::size_t block = std::min(kBlockCols, w);
        if (scratch.block.size() < block * h) scratch.block.resize(block * h);
        std::uint8_t* buf = scratch.block.data();
        for (std::size_t c0 = 0; c0 < w; c0 += block) {
            const std::size_t nb = std::min(block, w - c0);
            const std::uint8_t* base = data + static_cast<std::ptrdiff_t>(c0) * col_stride;
            for (std::size_t r = 0; r < h; ++r) {
                const std::uint8_t* row = base + static_cast<std::ptrdiff_t>(r) * row_stride;
                std::uint8_t* dst = buf + r;
                for (std::size_t j = 0; j < nb; ++j) {
                    dst[j * h] = row[static_cast<std::ptrdiff_t>(j) * col_stride];
                }
            }
            for (std::size_t j = 0; j < nb; ++j) {
                scan_column(buf + j * h, h, static_cast<std::uint64_t>(c0 + j) * h, st, writer);
            }
        }
    }
    writer.push(static_cast<std::uint64_t>(h) * w - st.boundary);  // final run
    writer.finish();
}

// ---------------------------------------------------------------------------
// Varint reader: pycocotools rleFrString plus the validation it lacks.
// Calls f(count, index) for each count in order.
// ---------------------------------------------------------------------------
template <class F>
void parse_string(std::string_view s, F&& f) {
    const std::size_t n = s.size();
    std::size_t p = 0;
    std::size_t index = 0;
    std::uint64_t prev1 = 0, prev2 = 0;
    while (p < n) {
        const std::size_t start = p;
        std::uint64_t ux = 0;
        unsigned shift = 0;
        bool more = true;
        while (more) {
            if (p >= n) {
                fail("truncated varint: count #" + std::to_string(index) +
                     " starting at position " + std::to_string(start) +
                     " has its continuation bit set on the last character");
            }
            if (p - start >= kMaxVarintChars) {
                fail("count #" + std::to_string(index) + " starting at position " +
                     std::to_string(start) + " is longer than " +
                     std::to_string(kMaxVarintChars) + " characters (overflow)");
            }
            const unsigned char ch = static_cast<unsigned char>(s[p]);
            if (ch < 48 || ch > 111) {
                fail("invalid character " +
                     (ch >= 32 && ch < 127 ? "'" + std::string(1, static_cast<char>(ch)) + "' "
                                           : std::string()) +
                     "(byte " + std::to_string(ch) + ") at position " + std::to_string(p) +
                     "; compressed counts use only ASCII 48..111 ('0'..'o')");
            }
            const unsigned c = ch - 48u;
            ux |= static_cast<std::uint64_t>(c & 0x1fu) << shift;
            shift += 5;
            more = (c & 0x20u) != 0;
            ++p;
            // Sign-extend from the last payload bit. shift <= 60 here, so the
            // shift is defined; done on unsigned to avoid UB on negatives.
            if (!more && (c & 0x10u)) ux |= ~std::uint64_t{0} << shift;
        }
        // |x| < 2^59 and prev2 <= kMaxCount, so the sum cannot overflow.
        std::int64_t x = static_cast<std::int64_t>(ux);
        if (index > 2) x += static_cast<std::int64_t>(prev2);
        if (x < 0) {
            fail("count #" + std::to_string(index) + " at position " + std::to_string(start) +
                 " decodes to a negative run length (" + std::to_string(x) + ")");
        }
        const std::uint64_t count = static_cast<std::uint64_t>(x);
        if (count > kMaxCount) {
            fail("count #" + std::to_string(index) + " at position " + std::to_string(start) +
                 " = " + std::to_string(count) + " exceeds the maximum run length");
        }
        f(count, index);
        prev2 = prev1;
        prev1 = count;
        ++index;
    }
}

template <class F>
void iterate_counts(const std::vector<std::uint64_t>& counts, F&& f) {
    for (std::size_t i = 0; i < counts.size(); ++i) f(counts[i], i);
}

std::string size_str(std::size_t h, std::size_t w) {
    return std::to_string(h) + "x" + std::to_string(w);
}

// Runs `iterate` (parse_string or iterate_counts bound to its input) and calls
// g(count, index, position) for each run, checking that the runs tile the
// h x w mask exactly. `position` is the run's first pixel (column-major).
template <class Iterate, class G>
void walk_checked(Iterate&& iterate, std::size_t h, std::size_t w, G&& g) {
    const std::uint64_t total = checked_area(h, w);
    std::uint64_t sum = 0;
    iterate([&](std::uint64_t count, std::size_t index) {
        // Written as a subtraction so the check itself cannot overflow.
        if (count > total - sum) {
            fail("counts overrun the mask: count #" + std::to_string(index) +
                 " brings the total past h*w = " + std::to_string(total) + " (size " +
                 size_str(h, w) + ")");
        }
        g(count, index, sum);
        sum += count;
    });
    if (sum != total) {
        fail("counts sum to " + std::to_string(sum) + " but the " + size_str(h, w) +
             " mask has " + std::to_string(total) + " pixels");
    }
}

template <class Iterate>
std::uint64_t area_impl(Iterate&& iterate, std::size_t h, std::size_t w) {
    std::uint64_t a = 0;
    walk_checked(iterate, h, w, [&](std::uint64_t count, std::size_t index, std::uint64_t) {
        if (index & 1) a += count;  // odd runs are foreground
    });
    return a;
}

template <class Iterate>
std::array<double, 4> bbox_impl(Iterate&& iterate, std::size_t h, std::size_t w) {
    bool any = false;
    std::uint64_t xs = 0, xe = 0, ys = 0, ye = 0;
    walk_checked(iterate, h, w,
                 [&](std::uint64_t count, std::size_t index, std::uint64_t pos) {
                     if (!(index & 1) || count == 0) return;
                     // h > 0 here: a nonzero run implies a nonempty mask.
                     const std::uint64_t first = pos, last = pos + count - 1;
                     const std::uint64_t x0 = first / h, y0 = first % h;
                     const std::uint64_t x1 = last / h, y1 = last % h;
                     // A run that wraps into the next column covers the last row of
                     // one column and the first row of the next: full height.
                     const std::uint64_t lo = x1 > x0 ? 0 : y0;
                     const std::uint64_t hi = x1 > x0 ? h - 1 : y1;
                     if (!any) {
                         xs = x0, xe = x1, ys = lo, ye = hi;
                         any = true;
                     } else {
                         xs = std::min(xs, x0), xe = std::max(xe, x1);
                         ys = std::min(ys, lo), ye = std::max(ye, hi);
                     }
                 });
    if (!any) return {0.0, 0.0, 0.0, 0.0};
    return {static_cast<double>(xs), static_cast<double>(ys),
            static_cast<double>(xe - xs + 1), static_cast<double>(ye - ys + 1)};
}


// ---------------------------------------------------------------------------
// Bit-packed masks (layout in rle.hpp). Same idea as encode_rows, 64 pixels
// per word: a column-major boundary is a pixel that differs from the pixel
// above it, i.e. a set bit of row[r] ^ row[r-1]; in row 0 the pixel "above"
// (c) is the bottom of column c-1, i.e. the bottom row shifted by one column.
// Boundaries are bucketed by column (counting sort) and emitted in
// column-major order. Area (sum of the foreground runs) and bbox (OR of all
// rows, first/last nonempty row) come from the same pass.
// ---------------------------------------------------------------------------

// Idx: uint32 when h and w fit (half the memory traffic on noisy masks),
// uint64 otherwise. One per worker, side by side in a vector: alignas keeps
// each on its own cache lines (push_back updates them per boundary).
template <class Idx>
struct alignas(64) PackedScratch {
    std::vector<std::uint64_t> words;  // prev row, cur row, OR of all rows (3 * nw)
    std::vector<Idx> trans_col;        // boundary columns, row-major order
    std::vector<std::size_t> row_end;  // end of each row's span in trans_col
    std::vector<std::size_t> col_start;  // counting-sort cursors per column
    std::vector<Idx> trans_row;        // boundary rows grouped by column
};

// Copies the ceil(w/8) meaningful bytes of a packed row into nw words (bit c
// of the row is bit c % 64 of word c / 64) and clears the padding bits.
inline void load_packed_row(const std::uint8_t* row, std::size_t nbytes, std::size_t nw,
                            std::uint64_t last_mask, std::uint64_t* dst) {
    dst[nw - 1] = 0;
    std::memcpy(dst, row, nbytes);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    for (std::size_t i = 0; i < nw; ++i) dst[i] = __builtin_bswap64(dst[i]);
#endif
    dst[nw - 1] &= last_mask;
}

// One packed mask, h >= 1 and w >= 1, sizes already validated; h and w fit Idx.
template <class Idx>
void encode_packed_into(const std::uint8_t* bits, std::size_t h, std::size_t w,
                        std::size_t row_bytes, PackedScratch<Idx>& s, PackedRle& out) {
    const std::size_t nbytes = (w + 7) / 8;
    const std::size_t nw = (w + 63) / 64;
    const std::uint64_t last_mask =
        (w % 64 == 0) ? ~std::uint64_t{0} : (std::uint64_t{1} << (w % 64)) - 1;
    s.words.assign(3 * nw, 0);
    std::uint64_t* prev = s.words.data();
    std::uint64_t* cur = prev + nw;
    std::uint64_t* acc = cur + nw;
    auto& cols = s.trans_col;
    cols.clear();

    out.counts.clear();
    StringWriter writer(out.counts);
    // Area from the runs as they are emitted: odd-indexed runs are foreground.
    std::uint64_t area = 0;
    bool fg_run = false;
    auto emit = [&](std::uint64_t count) {
        writer.push(count);
        if (fg_run) area += count;
        fg_run = !fg_run;
    };
    std::size_t y0 = h, y1 = 0;

    // Row 0 against the bottom row shifted one column right (column 0's
    // predecessor is the implicit leading background).
    load_packed_row(bits + (h - 1) * row_bytes, nbytes, nw, last_mask, prev);
    load_packed_row(bits, nbytes, nw, last_mask, cur);
    // h == 1: column-major order is row order, boundaries are already sorted.
    const bool direct = h == 1;
    std::uint64_t last = 0;
    auto add_row = [&](std::size_t r, const std::uint64_t* d_src_a, bool first_row) {
        std::uint64_t any = 0;
        for (std::size_t i = 0; i < nw; ++i) {
            const std::uint64_t v = cur[i];
            std::uint64_t d;
            if (first_row) {
                const std::uint64_t pred = (d_src_a[i] << 1) | (i > 0 ? d_src_a[i - 1] >> 63 : 0);
                d = (v ^ pred) & (i + 1 == nw ? last_mask : ~std::uint64_t{0});
            } else {
                d = v ^ d_src_a[i];
            }
            any |= v;
            acc[i] |= v;
            while (d != 0) {
                const std::uint64_t c = static_cast<std::uint64_t>(i) * 64 + ctz64(d);
                if (direct) {
                    emit(c - last);
                    last = c;
                } else {
                    cols.push_back(static_cast<Idx>(c));
                }
                d &= d - 1;
            }
        }
        if (any != 0) {
            if (y0 == h) y0 = r;
            y1 = r;
        }
    };
    add_row(0, prev, true);
    if (!direct) {
        s.row_end.resize(h);
        s.row_end[0] = cols.size();
        for (std::size_t r = 1; r < h; ++r) {
            std::swap(prev, cur);
            load_packed_row(bits + r * row_bytes, nbytes, nw, last_mask, cur);
            add_row(r, prev, false);
            s.row_end[r] = cols.size();
        }
        // Counting sort by column; rows stay ascending within a column.
        auto& start = s.col_start;
        start.assign(w + 1, 0);
        for (const Idx c : cols) ++start[static_cast<std::size_t>(c) + 1];
        for (std::size_t c = 0; c < w; ++c) start[c + 1] += start[c];
        s.trans_row.resize(cols.size());
        std::size_t i = 0;
        for (std::size_t r = 0; r < h; ++r) {
            for (const std::size_t end = s.row_end[r]; i < end; ++i) {
                s.trans_row[start[cols[i]]++] = static_cast<Idx>(r);
            }
        }
        std::size_t k = 0;
        for (std::size_t c = 0; c < w; ++c) {
            const std::uint64_t base = static_cast<std::uint64_t>(c) * h;
            for (const std::size_t end = start[c]; k < end; ++k) {
                const std::uint64_t pos = base + s.trans_row[k];
                emit(pos - last);
                last = pos;
            }
        }
    }
    emit(static_cast<std::uint64_t>(h) * w - last);
    writer.finish();

    out.area = area;
    if (area == 0) {
        out.bbox = {0.0, 0.0, 0.0, 0.0};
        return;
    }
    std::size_t x0 = 0, x1 = 0;
    for (std::size_t i = 0; i < nw; ++i) {
        if (acc[i] != 0) {
            x0 = i * 64 + ctz64(acc[i]);
            break;
        }
    }
    for (std::size_t i = nw; i-- > 0;) {
        if (acc[i] != 0) {
            x1 = i * 64 + 63 - clz64(acc[i]);
            break;
        }
    }
    out.bbox = {static_cast<double>(x0), static_cast<double>(y0),
                static_cast<double>(x1 - x0 + 1), static_cast<double>(y1 - y0 + 1)};
}

// a * b, or fail(what) when it overflows size_t.
std::size_t checked_mul(std::size_t a, std::size_t b, const std::string& what) {
    if (a != 0 && b > static_cast<std::size_t>(-1) / a) fail(what + " overflows");
    return a * b;
}

}  // namespace

std::uint64_t checked_area(std::size_t h, std::size_t w) {
    const std::uint64_t hh = h, ww = w;
    if (hh > kMaxCount || ww > kMaxCount || (hh != 0 && ww > kMaxCount / hh)) {
        fail("mask size " + size_str(h, w) + " is too large (more than " +
             std::to_string(kMaxCount) + " pixels)");
    }
    return hh * ww;
}

std::uint64_t checked_pixels(std::size_t k, std::size_t h, std::size_t w,
                             std::uint64_t max_pixels) {
    const std::uint64_t area = checked_area(h, w);
    const std::uint64_t kk = k;
    // Division, not k * area: the product may overflow.
    if (area != 0 && kk > max_pixels / area) {
        constexpr std::uint64_t kMax64 = ~std::uint64_t{0};
        const std::string pixels = kk > kMax64 / area
                                       ? "more than " + std::to_string(kMax64) + " pixels"
                                       : std::to_string(kk * area) + " pixels";
        if (k == 1) {
            fail("mask size " + size_str(h, w) + " = " + pixels + " is above max_pixels = " +
                 std::to_string(max_pixels));
        }
        fail(std::to_string(k) + " RLEs of size " + size_str(h, w) + " = " + pixels +
             " in all, above max_pixels = " + std::to_string(max_pixels));
    }
    return kk * area;
}

std::string encode(const std::uint8_t* data, std::size_t h, std::size_t w,
                   std::ptrdiff_t row_stride, std::ptrdiff_t col_stride) {
    Scratch scratch;
    std::string out;
    encode_into(data, h, w, row_stride, col_stride, scratch, out);
    return out;
}

std::vector<std::string> encode_batch(const std::uint8_t* data, std::size_t k, std::size_t h,
                                      std::size_t w, std::ptrdiff_t mask_stride,
                                      std::ptrdiff_t row_stride, std::ptrdiff_t col_stride) {
    checked_area(h, w);
    if (k > 0 && h > 0 && w > 0 && data == nullptr) fail("mask data pointer is null");
    std::vector<std::string> out(k);
    Scratch scratch;  // shared by all masks: allocations amortised over the batch
    for (std::size_t i = 0; i < k; ++i) {
        encode_into(data == nullptr ? nullptr : data + static_cast<std::ptrdiff_t>(i) * mask_stride,
                    h, w, row_stride, col_stride, scratch, out[i]);
    }
    return out;
}

std::vector<PackedRle> encode_packed_batch(const std::uint8_t* bits, std::size_t bits_size,
                                           std::size_t k, std::size_t h, std::size_t w,
                                           std::size_t row_bytes, unsigned threads) {
    checked_area(h, w);
    const std::size_t min_row_bytes = w / 8 + (w % 8 != 0);
    if (row_bytes < min_row_bytes) {
        fail("packed row_bytes = " + std::to_string(row_bytes) + " is too small for width " +
             std::to_string(w) + " (needs at least ceil(w/8) = " + std::to_string(min_row_bytes) +
             ")");
    }
    const std::string dims = std::to_string(k) + " packed mask(s) of " + size_str(h, w) +
                             " with row_bytes = " + std::to_string(row_bytes);
    const std::size_t mask_bytes = checked_mul(h, row_bytes, "packed mask size of " + dims);
    const std::size_t need = checked_mul(k, mask_bytes, "packed buffer size of " + dims);
    if (bits_size < need) {
        fail("packed buffer holds " + std::to_string(bits_size) + " bytes but " + dims +
             " need " + std::to_string(need));
    }
    std::vector<PackedRle> out(k);
    if (h == 0 || w == 0) {
        for (auto& r : out) r.counts = "0";
        return out;
    }
    if (k > 0 && bits == nullptr) fail("packed mask pointer is null");

    unsigned n = threads != 0 ? threads : std::max(1u, std::thread::hardware_concurrency());
    n = std::min(n, kMaxPackedThreads);
    // Below ~256K pixels per thread, starting a thread costs more than it saves.
    const std::uint64_t pixels = static_cast<std::uint64_t>(h) * w * k;
    const std::uint64_t by_work = std::max<std::uint64_t>(1, pixels >> 18);
    n = static_cast<unsigned>(std::min<std::uint64_t>({n, k, by_work}));
    // 32-bit boundary indices when h and w fit (always, in practice).
    constexpr std::size_t kU32 = 0xffffffffu;
    auto encode_all = [&](auto index_type) {
        using Idx = decltype(index_type);
        // Worker 0 (this thread) keeps its scratch on the stack: a single
        // mask costs no extra allocation.
        PackedScratch<Idx> first;
        const std::size_t workers = detail::parallel_workers(k, n);
        std::vector<PackedScratch<Idx>> others(workers > 1 ? workers - 1 : 0);
        detail::parallel_for(k, n, [&](std::size_t i, std::size_t worker) {
            PackedScratch<Idx>& scratch = worker == 0 ? first : others[worker - 1];
            encode_packed_into(bits + i * mask_bytes, h, w, row_bytes, scratch, out[i]);
        });
    };
    if (h <= kU32 && w <= kU32) {
        encode_all(std::uint32_t{});
    } else {
        encode_all(std::uint64_t{});
    }
    return out;
}

PackedRle encode_packed(const std::uint8_t* bits, std::size_t bits_size, std::size_t h,
                        std::size_t w, std::size_t row_bytes) {
    auto v = encode_packed_batch(bits, bits_size, 1, h, w, row_bytes, 1);
    return std::move(v[0]);
}

std::vector<std::uint64_t> string_to_counts(std::string_view s) {
    std::vector<std::uint64_t> counts;
    counts.reserve(s.size());  // at least one char per count
    parse_string(s, [&](std::uint64_t c, std::size_t) { counts.push_back(c); });
    return counts;
}

std::string counts_to_string(const std::uint64_t* counts, std::size_t n) {
    if (n > 0 && counts == nullptr) fail("counts pointer is null");
    std::string out;
    StringWriter writer(out);
    for (std::size_t i = 0; i < n; ++i) writer.push(counts[i]);
    writer.finish();
    return out;
}

namespace {

// The h*w pixels of the mask, once `out` is known to hold them all.
std::uint64_t check_output(std::size_t h, std::size_t w, const std::uint8_t* out,
                           std::size_t out_size) {
    const std::uint64_t total = checked_area(h, w);
    if (out_size < total) {
        fail("output buffer holds " + std::to_string(out_size) + " bytes but the " +
             size_str(h, w) + " mask needs " + std::to_string(total));
    }
    if (total > 0 && out == nullptr) fail("output pointer is null");
    return total;
}

// Pass 2 of a decode: each run is a contiguous span of the column-major
// output. walk_checked tests every run against h*w before g() sees it, and
// out_size >= h*w is checked here, so no write leaves `out` whatever `s` holds.
void write_runs(std::string_view s, std::size_t h, std::size_t w, std::uint8_t* out,
                std::size_t out_size) {
    const std::uint64_t total = check_output(h, w, out, out_size);
    auto iterate = [&](auto&& f) { parse_string(s, f); };
    walk_checked(iterate, h, w, [&](std::uint64_t count, std::size_t index, std::uint64_t pos) {
        std::uint8_t* dst = out + pos;
        const std::uint8_t v = static_cast<std::uint8_t>(index & 1);
        if (count <= 8 && total - pos >= 8) {
            // Short run: one 8-byte store beats a memset call. Bytes past the
            // run are overwritten by the following runs (runs are written in
            // order), and the bound keeps the store inside the h*w mask.
            const std::uint64_t pattern = v * kOnes;
            std::memcpy(dst, &pattern, 8);
        } else if (count <= 8) {
            // Tail of the mask; zero-length runs also land here, so a null
            // `out` (0-pixel mask) never reaches memset.
            for (std::uint64_t j = 0; j < count; ++j) dst[j] = v;
        } else {
            std::memset(dst, v, static_cast<std::size_t>(count));
        }
    });
}

}  // namespace

void decode(std::string_view s, std::size_t h, std::size_t w, std::uint8_t* out,
            std::size_t out_size) {
    check_output(h, w, out, out_size);  // before parsing: a short buffer fails fast
    // Pass 1 validates everything so a malformed string never leaves a
    // half-written buffer; strings are tiny next to the mask, so this is cheap.
    validate(s, h, w);
    write_runs(s, h, w, out, out_size);
}

void decode_validated(std::string_view s, std::size_t h, std::size_t w, std::uint8_t* out,
                      std::size_t out_size) {
    write_runs(s, h, w, out, out_size);
}

std::uint64_t validate(std::string_view s, std::size_t h, std::size_t w,
                       std::uint64_t max_pixels) {
    // The size first: a huge size is refused without parsing a char.
    const std::uint64_t total = checked_pixels(1, h, w, max_pixels);
    walk_checked([&](auto&& f) { parse_string(s, f); }, h, w,
                 [](std::uint64_t, std::size_t, std::uint64_t) {});
    return total;
}

std::vector<std::uint8_t> decode_to_vector(std::string_view s, std::size_t h, std::size_t w,
                                           std::uint64_t max_pixels) {
    const std::uint64_t total = validate(s, h, w, max_pixels);  // throws before allocating
    if (total > static_cast<std::uint64_t>(static_cast<std::size_t>(-1))) {
        fail("mask size " + size_str(h, w) + " does not fit this platform's address space");
    }
    std::vector<std::uint8_t> out(static_cast<std::size_t>(total));
    write_runs(s, h, w, out.data(), out.size());
    return out;
}

std::uint64_t area(std::string_view s, std::size_t h, std::size_t w) {
    return area_impl([&](auto&& f) { parse_string(s, f); }, h, w);
}

std::uint64_t area_counts(const std::vector<std::uint64_t>& counts, std::size_t h,
                          std::size_t w) {
    return area_impl([&](auto&& f) { iterate_counts(counts, f); }, h, w);
}

std::array<double, 4> bbox(std::string_view s, std::size_t h, std::size_t w) {
    return bbox_impl([&](auto&& f) { parse_string(s, f); }, h, w);
}

std::array<double, 4> bbox_counts(const std::vector<std::uint64_t>& counts, std::size_t h,
                                  std::size_t w) {
    return bbox_impl([&](auto&& f) { iterate_counts(counts, f); }, h, w);
}

}  // namespace fastclipseg::rle
