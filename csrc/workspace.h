// Scratch memory for the kernels. A kernel call's workspaces (packed weights, gate gradients, ring
// buffers) are returned to a cache of the calling thread when the call ends, and the next call of
// that thread takes them again: memory the OS has already mapped is reused instead of being faulted
// in page by page every call (16 MB took 15 ms to fault in on the development machine, as long as
// the whole forward of a small layer). The cache holds at most kCachedBuffers blocks per thread and
// frees them when the thread ends.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>
#include <utility>
#include <vector>

#include "common.h"

namespace rnnfast {

namespace detail {

constexpr size_t kCachedBuffers = 16;

struct Block {
  void* p;
  size_t bytes;
};

class BlockCache {
 public:
  ~BlockCache() {
    for (Block& b : blocks_) std::free(b.p);
  }
  // The smallest cached block of at least `bytes`, or a new one (std::bad_alloc if impossible).
  Block take(size_t bytes) {
    size_t best = blocks_.size();
    for (size_t k = 0; k < blocks_.size(); ++k)
      if (blocks_[k].bytes >= bytes && (best == blocks_.size() || blocks_[k].bytes < blocks_[best].bytes))
        best = k;
    if (best < blocks_.size()) {
      Block b = blocks_[best];
      blocks_.erase(blocks_.begin() + static_cast<std::ptrdiff_t>(best));
      return b;
    }
    const size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (p == nullptr) throw std::bad_alloc();
    return {p, rounded};
  }
  void give(Block b) {
    blocks_.push_back(b);
    if (blocks_.size() > kCachedBuffers) {  // drop the smallest: it is the cheapest to re-fault
      size_t small = 0;
      for (size_t k = 1; k < blocks_.size(); ++k)
        if (blocks_[k].bytes < blocks_[small].bytes) small = k;
      std::free(blocks_[small].p);
      blocks_.erase(blocks_.begin() + static_cast<std::ptrdiff_t>(small));
    }
  }

 private:
  std::vector<Block> blocks_;
};

inline BlockCache& thread_cache() {
  thread_local BlockCache cache;
  return cache;
}

}  // namespace detail

// n elements of T from the thread's cache, 64-byte aligned, uninitialised unless a fill value is
// given. Move-only; gives its memory back when destroyed (on the thread that made it).
template <typename T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(Index n) : n_(n) {
    if (n > 0) {
      block_ = detail::thread_cache().take(static_cast<size_t>(n) * sizeof(T));
    }
  }
  Buffer(Index n, T value) : Buffer(n) { fill(value); }
  Buffer(Buffer&& o) noexcept : block_(std::exchange(o.block_, {nullptr, 0})), n_(std::exchange(o.n_, 0)) {}
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      release();
      block_ = std::exchange(o.block_, {nullptr, 0});
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { release(); }

  T* data() { return static_cast<T*>(block_.p); }
  const T* data() const { return static_cast<const T*>(block_.p); }
  Index size() const { return n_; }
  bool empty() const { return n_ == 0; }
  T* begin() { return data(); }
  T* end() { return data() + n_; }
  void fill(T value) {
    for (Index k = 0; k < n_; ++k) data()[k] = value;
  }

 private:
  void release() {
    if (block_.p != nullptr) detail::thread_cache().give(block_);
    block_ = {nullptr, 0};
  }
  detail::Block block_{nullptr, 0};
  Index n_ = 0;
};

}  // namespace rnnfast
