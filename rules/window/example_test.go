package window_test

import (
	"fmt"
	"time"

	"github.com/sluicehq/sluice/rules/window"
)

// A 5 minute window of one series' temperature, fed once a second by a
// simulated clock.
func ExampleStats() {
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	temps := window.NewStats(5 * time.Minute)
	var now int64
	for i := range 600 { // 10 minutes: the first 5 have left the window
		now = start + int64(i)*int64(time.Second)
		temps.Add(now, 20+float64(i%10))
	}
	mean, _ := temps.Mean(now)
	hi, _ := temps.Max(now)
	fmt.Printf("%d samples, mean %.1f, max %.0f\n", temps.Count(now), mean, hi)
	// Output: 300 samples, mean 24.5, max 29
}

// for(2m): an alert fires once the condition has held for 2 minutes.
func ExampleHeld() {
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	var hot window.Held
	for _, m := range []int{0, 1, 2, 3} {
		now := start + int64(m)*int64(time.Minute)
		held := hot.Observe(now, true)
		fmt.Println(held, held >= 2*time.Minute)
	}
	// Output:
	// 0s false
	// 1m0s false
	// 2m0s true
	// 3m0s true
}
