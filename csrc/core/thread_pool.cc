#include "sageattn/thread_pool.h"

#include "sageattn/error.h"

#include <algorithm>
#include <atomic>
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
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &job;
      wanted_ = num_threads - 1;
      done_ = 0;
      ++generation_;
    }
    cv_.notify_all();
    job.run(0);
    std::unique_lock<std::mutex> lock(mutex_);
    done_cv_.wait(lock, [&] { return done_ == wanted_; });
    job_ = nullptr;
  }

 private:
  void ensure_workers(int n) {
    while (static_cast<int>(workers_.size()) < n) {
      const int id = static_cast<int>(workers_.size()) + 1;
      workers_.emplace_back([this, id] { worker_loop(id); });
      workers_.back().detach();
    }
  }

  void worker_loop(int id) {
    uint64_t seen = 0;
    for (;;) {
      Job* job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (id > wanted_) continue;
        job = job_;
      }
      job->run(id);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        ++done_;
      }
      done_cv_.notify_one();
    }
  }

  std::mutex busy_;
  std::mutex mutex_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  Job* job_ = nullptr;
  int wanted_ = 0;
  int done_ = 0;
  uint64_t generation_ = 0;
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
