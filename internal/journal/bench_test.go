package journal

import (
	"context"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
)

const benchRecord = 256

// BenchmarkAppend appends 256-byte records and waits for each to be durable
// per mode. The reader acknowledges as it goes, so space is reclaimed. The
// "+key" cases set Options.Key (Memory mode ignores it).
func BenchmarkAppend(b *testing.B) {
	for _, bc := range []struct {
		name      string
		mode      Mode
		appenders int
		key       bool
	}{
		{"memory", Memory, 1, false},
		{"memory+key", Memory, 1, true},
		{"process", Process, 1, false},
		{"process+key", Process, 1, true},
		{"fsync/1", Fsync, 1, false},
		{"fsync/64", Fsync, 64, false},
		{"fsync/64+key", Fsync, 64, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var fsyncs atomic.Int64
			o := optsFor(b, bc.mode)
			o.syncFile = func(f *os.File) error { fsyncs.Add(1); return f.Sync() }
			if bc.key {
				o.Key = testKey(1)
			}
			j := open(b, o)
			r := j.Reader("sink")
			data := make([]byte, benchRecord)
			ctx := context.Background()
			b.SetBytes(benchRecord)
			b.ReportAllocs()
			if bc.appenders == 1 {
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					seq, err := j.Append(ctx, 1, data, nil, true)
					if err != nil {
						b.Fatal(err)
					}
					if seq%4096 == 0 {
						r.Ack(seq)
					}
				}
				return
			}
			fsyncs.Store(0)
			b.SetParallelism(max(1, bc.appenders/runtime.GOMAXPROCS(0)))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					seq, err := j.Append(ctx, 1, data, nil, true)
					if err != nil {
						b.Error(err)
						return
					}
					if seq%4096 == 0 {
						r.Ack(seq)
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/float64(max(1, fsyncs.Load())), "appends/fsync")
		})
	}
}

// BenchmarkReadTail: a reader follows a writer and gets every record, with
// its value, from the cache. The writer is held back by MaxBytes (Block)
// so that it cannot run out of the cache.
func BenchmarkReadTail(b *testing.B) {
	for _, mode := range []Mode{Memory, Process} {
		b.Run(mode.String(), func(b *testing.B) {
			o := optsFor(b, mode)
			o.MaxBytes = 8 << 20
			j := open(b, o)
			r := j.Reader("sink")
			data := make([]byte, benchRecord)
			value := &struct{ n int }{}
			ctx := context.Background()
			b.SetBytes(benchRecord)
			b.ReportAllocs()
			b.ResetTimer()
			done := make(chan error, 1)
			go func() {
				for i := 0; i < b.N; i++ {
					if _, err := j.Append(ctx, 1, data, value, false); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			for i := 0; i < b.N; i++ {
				e, err := r.Next(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if e.Value == nil {
					b.Fatalf("seq %d not from the cache", e.Seq)
				}
				if e.Seq%256 == 0 {
					r.Ack(e.Seq)
				}
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkReadCache reads records already in the cache (no writer
// running while the timer runs): the cost of Next itself.
func BenchmarkReadCache(b *testing.B) {
	benchReadBehind(b, Process, 0, nil)
}

// BenchmarkReadDisk: a reader behind the writer reads 256-byte records
// from the segment files (in the page cache), checking each CRC and, with
// a key, authenticating and decrypting each record.
func BenchmarkReadDisk(b *testing.B) {
	b.Run("plain", func(b *testing.B) { benchReadBehind(b, Process, -1, nil) })
	b.Run("key", func(b *testing.B) { benchReadBehind(b, Process, -1, testKey(1)) })
}

// benchReadBehind appends records in chunks with the timer stopped, then
// reads them back with it running.
func benchReadBehind(b *testing.B, mode Mode, cacheBytes int64, key []byte) {
	o := optsFor(b, mode)
	o.CacheBytes = cacheBytes
	o.Key = key
	j := open(b, o)
	r := j.Reader("sink")
	data := make([]byte, benchRecord)
	ctx := context.Background()
	b.SetBytes(benchRecord)
	b.ReportAllocs()
	b.ResetTimer()
	const chunk = 50000 // fits the default cache
	for done := 0; done < b.N; {
		n := min(chunk, b.N-done)
		b.StopTimer()
		for i := 0; i < n; i++ {
			if _, err := j.Write(1, data, nil); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		var last uint64
		for i := 0; i < n; i++ {
			e, err := r.Next(ctx)
			if err != nil {
				b.Fatal(err)
			}
			last = e.Seq
		}
		r.Ack(last)
		done += n
	}
}
