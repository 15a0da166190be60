package events

// worker hands the values offered to a bounded queue to one goroutine.
// Publisher and AutoBan each run one, so that no network call is made on
// the caller's goroutine.
type worker[T any] struct {
	queue chan T
	stop  chan struct{}
	done  chan struct{}
}

// startWorker starts a worker with a queue of size that calls handle on
// each value, in order.
func startWorker[T any](size int, handle func(T)) *worker[T] {
	w := &worker[T]{queue: make(chan T, size), stop: make(chan struct{}), done: make(chan struct{})}
	go w.run(handle)
	return w
}

// offer queues v and reports whether there was room. It never blocks.
func (w *worker[T]) offer(v T) bool {
	select {
	case w.queue <- v:
		return true
	default:
		return false
	}
}

// close stops the worker once it has handled what is queued, and returns
// when its goroutine has ended. Call it once.
func (w *worker[T]) close() {
	close(w.stop)
	<-w.done
}

func (w *worker[T]) run(handle func(T)) {
	defer close(w.done)
	for {
		select {
		case v := <-w.queue:
			handle(v)
		case <-w.stop:
			for {
				select {
				case v := <-w.queue:
					handle(v)
				default:
					return
				}
			}
		}
	}
}
