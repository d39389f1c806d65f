#include "sageattn/thread_pool.h"

#include "sageattn/error.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

namespace sageattn {
namespace {

// The first failure of a job, kept as what the binding layer needs to raise it again on
// the caller's thread. (Not a std::exception_ptr: with GCC 11 and later its copies call
// libstdc++ functions that exist only from GCC 11 on, which would raise the wheel's
// manylinux floor; see csrc/compat/portable_symbols.h.)
struct Failure {
  enum class Type { kNone, kError, kOutOfMemory } type = Type::kNone;
  ErrorKind kind = ErrorKind::kRuntime;
  std::string message;

  void record(ErrorKind k, const char* what) noexcept {
    try {
      message = what;
      kind = k;
      type = Type::kError;
    } catch (...) {  // no memory left for the message
      type = Type::kOutOfMemory;
    }
  }

  void rethrow_if_failed() const {
    if (type == Type::kOutOfMemory) throw std::bad_alloc();
    if (type == Type::kError) throw Error(kind, message);
  }
};

// One fork-join job shared by the caller and its helper threads.
struct Job {
  const std::function<void(int64_t, int)>* fn = nullptr;
  int64_t n_tasks = 0;
  std::atomic<int64_t> next{0};
  std::mutex error_mutex;
  Failure failure;

  void run(int worker) {
    for (;;) {
      const int64_t t = next.fetch_add(1, std::memory_order_relaxed);
      if (t >= n_tasks) return;
      try {
        (*fn)(t, worker);
      } catch (const Error& e) {
        fail(e.kind(), e.what(), false);
      } catch (const std::bad_alloc&) {
        fail(ErrorKind::kRuntime, "", true);
      } catch (const std::exception& e) {
        fail(ErrorKind::kRuntime, e.what(), false);
      } catch (...) {
        fail(ErrorKind::kRuntime, "sageattention: unknown exception in a worker thread", false);
      }
    }
  }

  void fail(ErrorKind kind, const char* what, bool out_of_memory) noexcept {
    std::lock_guard<std::mutex> lock(error_mutex);
    if (failure.type == Failure::Type::kNone) {
      if (out_of_memory) failure.type = Failure::Type::kOutOfMemory;
      else failure.record(kind, what);
    }
    next.store(n_tasks);  // stop handing out work
  }
};

// Idles briefly in a spin before sleeping: a call runs several fork-joins back to back
// (quantizers, K/V packing, attention), and a futex wake-up per fork costs more than
// the small ones take. Both sides spin this long at most, then block.
constexpr auto kSpin = std::chrono::microseconds(100);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Spins on `done()` for up to kSpin; true when it became true.
template <class Pred>
bool spin_until(Pred done) {
  const auto until = std::chrono::steady_clock::now() + kSpin;
  for (int i = 0;; ++i) {
    if (done()) return true;
    cpu_relax();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > until) return false;
  }
}

// Persistent workers for the common case of one caller at a time. A second concurrent
// caller does not wait for the first: it gets threads of its own (see parallel_for).
class Pool {
 public:
  // Never destroyed: workers may outlive static destructors. A forked child inherits the
  // pool's bookkeeping but none of its threads (and maybe a held lock), so the child's
  // first call builds a fresh pool; the parent's copy is abandoned on purpose.
  static Pool& instance() {
    static std::atomic<Pool*> pool{nullptr};
    static std::atomic<pid_t> owner{0};
    static std::mutex create_mutex;
    const pid_t me = getpid();
    Pool* p = pool.load(std::memory_order_acquire);
    if (p != nullptr && owner.load(std::memory_order_acquire) == me) return *p;
    if (owner.load() != me) new (&create_mutex) std::mutex();  // may have been held at fork
    std::lock_guard<std::mutex> lock(create_mutex);
    p = pool.load(std::memory_order_acquire);
    if (p == nullptr || owner.load() != me) {
      p = new Pool();
      pool.store(p, std::memory_order_release);
      owner.store(me, std::memory_order_release);
    }
    return *p;
  }

  bool try_acquire() { return busy_.try_lock(); }
  void release() { busy_.unlock(); }

  void run(Job& job, int num_threads) {
    ensure_workers(num_threads - 1);
    job_.store(&job, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    const int wanted = num_threads - 1;
    // One word holds the generation and how many workers it wants, so a worker decides
    // from one consistent snapshot. Sequentially consistent with the sleepers_ check
    // (see worker_loop): a worker either sees the new generation or is woken here.
    state_.store(((state_.load() >> 16) + 1) << 16 | static_cast<uint64_t>(wanted));
    if (sleepers_.load() > 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      cv_.notify_all();
    }
    job.run(0);
    auto all_done = [&] { return done_.load(std::memory_order_acquire) == wanted; };
    if (!spin_until(all_done)) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_cv_.wait(lock, all_done);
    }
  }

 private:
  void ensure_workers(int n) {
    while (static_cast<int>(workers_.size()) < n) {
      const int id = static_cast<int>(workers_.size()) + 1;
      workers_.emplace_back([this, id, seen = state_.load() >> 16] { worker_loop(id, seen); });
      workers_.back().detach();
    }
  }

  // A worker wanted by generation g runs g's job exactly once; the caller does not start
  // g + 1 before every worker g wants is done, so job_ is g's while it runs.
  void worker_loop(int id, uint64_t seen) {
    for (;;) {
      uint64_t st = state_.load();
      auto fresh = [&] {
        st = state_.load();
        return (st >> 16) != seen;
      };
      if (!spin_until(fresh)) {
        std::unique_lock<std::mutex> lock(mutex_);
        sleepers_.fetch_add(1);
        cv_.wait(lock, fresh);
        sleepers_.fetch_sub(1);
      }
      seen = st >> 16;
      const int wanted = static_cast<int>(st & 0xFFFF);
      if (id > wanted) continue;
      job_.load(std::memory_order_relaxed)->run(id);
      if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == wanted) {
        std::lock_guard<std::mutex> lock(mutex_);  // the caller may be about to block
        done_cv_.notify_one();
      }
    }
  }

  std::mutex busy_;
  std::mutex mutex_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  std::atomic<Job*> job_{nullptr};
  std::atomic<int> done_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<uint64_t> state_{0};  // generation << 16 | workers wanted
};

}  // namespace

void parallel_for(int64_t n_tasks, int num_threads,
                  const std::function<void(int64_t, int)>& fn) {
  if (n_tasks <= 0) return;
  num_threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, n_tasks)));
  Job job;
  job.fn = &fn;
  job.n_tasks = n_tasks;
  if (num_threads == 1) {
    job.run(0);
  } else {
    Pool& pool = Pool::instance();
    if (pool.try_acquire()) {
      pool.run(job, num_threads);
      pool.release();
    } else {
      std::vector<std::thread> threads;
      threads.reserve(num_threads - 1);
      for (int w = 1; w < num_threads; ++w) threads.emplace_back([&job, w] { job.run(w); });
      job.run(0);
      for (auto& t : threads) t.join();
    }
  }
  job.failure.rethrow_if_failed();
}

}  // namespace sageattn
