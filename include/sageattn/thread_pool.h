// A small fork-join pool. Tasks are claimed dynamically from an atomic counter, so a
// caller that orders tasks heaviest-first gets causal load balancing for free.
// Results never depend on which thread ran a task (each task writes its own outputs).
#pragma once
#include <cstdint>
#include <functional>

namespace sageattn {

// Runs fn(task, worker) for task in [0, n_tasks) on up to `num_threads` threads
// (worker in [0, num_threads)). The calling thread takes part. Exceptions thrown by
// fn are rethrown on the calling thread after all workers stop.
void parallel_for(int64_t n_tasks, int num_threads,
                  const std::function<void(int64_t task, int worker)>& fn);

}  // namespace sageattn
