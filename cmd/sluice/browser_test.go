package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/eclipse/paho.golang/paho"

	"github.com/sluicehq/sluice/internal/testsvc"
)

// chromium returns Debian's chromium, or skips the test without it (under
// CI=true its absence is a failure: .ci/run installs it).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed (apt-get install chromium; .ci/run installs it)")
	}
	t.Skip("chromium is not installed: apt-get install chromium")
	return ""
}

// browser starts a headless chromium with a fresh profile, on a closed
// network (nothing but the page under test is reached), and returns a
// context to drive it.
func browser(t *testing.T, width, height int) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// Starting chromium on a loaded machine can take a while.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// run runs browser actions with a generous deadline.
func run(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, actions...); err != nil {
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("%s: %v\npage:\n%s", what, err, body)
	}
}

// value runs one browser action and returns its value.
func value[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	v, err := chromedp.Run(tctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// setValue sets the value of a text field, as pasting into it would.
func setValue(sel, v string) chromedp.Action[chromedp.Void] {
	b, _ := json.Marshal(v)
	set := chromedp.Evaluate[bool](fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.value = %s; e.dispatchEvent(new Event("input")); return true })()`, sel, b))
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := set(ctx, t)
		return chromedp.Void{}, err
	}
}

// waitText waits until the element sel's text contains want.
func waitText(sel, want string) chromedp.Action[chromedp.Void] {
	poll := chromedp.Poll[bool](fmt.Sprintf(`(document.querySelector(%q)?.innerText || document.querySelector(%q)?.value || "").includes(%q)`, sel, sel, want),
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(50*time.Second))
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := poll(ctx, t)
		return chromedp.Void{}, err
	}
}

// TestConsoleInABrowser loads /console in headless chromium against a
// running sluice with real traffic: without the token it shows a sign-in
// form and nothing else; with it, the firing device is in the alerts
// table, a message published now arrives in the tail, and a rule typed in
// the playground shows its alert. With SLUICE_CONSOLE_SHOTS=DIR it also
// takes a screenshot of each view into DIR (make console-shots, for
// docs/console.md).
func TestConsoleInABrowser(t *testing.T) {
	shots := os.Getenv("SLUICE_CONSOLE_SHOTS")
	ctx := browser(t, 1280, 860)
	_, _, mqttAddr, adminAddr := consoleSluice(t)
	page := "http://" + adminAddr + "/console/"
	dev := testsvc.MQTT(t, mqttAddr, "gateway")
	publish := func(topic, payload string) {
		t.Helper()
		if rc := dev.Publish(t, topic, 1, []byte(payload)); rc != 0 {
			t.Fatalf("publish: reason code %#x", rc)
		}
	}
	for i, temp := range []int{70, 84, 95, 97} {
		publish("plant/north/b7/telemetry", fmt.Sprintf(`{"kind":"boiler","temperature":%d}`, temp))
		publish("plant/north/b8/telemetry", fmt.Sprintf(`{"kind":"boiler","temperature":%d}`, 60+i))
	}
	publish("plant/south/p1/telemetry", `{"kind":"pump","flow":12}`) // a dead letter: no power
	if shots != "" {
		// Traffic for as long as the test runs, and a minute of it before
		// the first screenshot, for the overview's charts.
		fleet := testsvc.MQTT(t, mqttAddr, "fleet")
		stop := make(chan struct{})
		done := make(chan struct{})
		t.Cleanup(func() { close(stop); <-done })
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				for k, d := range []string{"b1", "b2", "b3", "b4", "b5", "b6"} {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					fleet.Client.Publish(ctx, &paho.Publish{Topic: "plant/north/" + d + "/telemetry", QoS: 1,
						Payload: fmt.Appendf(nil, `{"kind":"boiler","temperature":%d}`, 60+(i*7+k*5)%25)})
					cancel()
				}
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(200+(i%5)*150) * time.Millisecond):
				}
			}
		}()
		time.Sleep(time.Minute)
	}

	// Without the token: the sign-in form, and nothing of sluice's.
	run(t, ctx, "the page without a token",
		chromedp.Navigate(page),
		chromedp.WaitVisible(chromedp.CSS("#login-form")))
	appHidden := value(t, ctx, "is the app hidden", chromedp.Evaluate[bool](`document.getElementById("app").hidden`))
	text := value(t, ctx, "the page's text", chromedp.Evaluate[string](`document.body.innerText`))
	if !appHidden || strings.Contains(text, "b7") || strings.Contains(text, "telemetry") || !strings.Contains(text, "Admin token") {
		t.Fatalf("without the token the page shows more than a sign-in form:\n%s", text)
	}
	shoot(t, ctx, shots, "login")
	run(t, ctx, "a wrong token",
		chromedp.SendKeys(chromedp.CSS("#token"), "wrong"),
		chromedp.Click(chromedp.CSS("#login-form button")),
		waitText("#login-error", "not the admin token"))

	// Signed in: the overview, then the firing device in the alerts table.
	run(t, ctx, "signing in",
		chromedp.SendKeys(chromedp.CSS("#token"), "console-s3cret"),
		chromedp.Click(chromedp.CSS("#login-form button")),
		chromedp.WaitVisible(chromedp.CSS("#view-overview")),
		waitText("#sinks", "records"))
	if shots != "" {
		// The sinks' rates need two reads of the status, 5 s apart.
		run(t, ctx, "the sinks' rates", chromedp.Sleep(6*time.Second))
	}
	shoot(t, ctx, shots, "overview")
	run(t, ctx, "the alerts view",
		chromedp.Click(chromedp.CSS(`nav a[data-view="alerts"]`)),
		chromedp.WaitVisible(chromedp.CSS("#firing")),
		waitText("#firing tbody", "b7"),
		waitText("#firing tbody", "b7 at 95"),
		waitText("#transitions tbody", "firing"))
	firingRows := value(t, ctx, "count the firing rows", chromedp.Evaluate[int](`document.querySelectorAll("#firing tbody tr").length`))
	if firingRows != 1 {
		t.Errorf("%d firing rows, want b7's alone", firingRows)
	}
	shoot(t, ctx, shots, "alerts")

	// The tail: a message published now arrives.
	run(t, ctx, "the tail view",
		chromedp.Click(chromedp.CSS(`nav a[data-view="tail"]`)),
		waitText("#tail-state", "watching"))
	publish("plant/north/b9/telemetry", `{"kind":"boiler","temperature":91.5}`)
	run(t, ctx, "a live message in the tail",
		waitText("#tail", "plant/north/b9/telemetry"),
		waitText("#tail", "boiler: alert firing b9 critical value=91.5: b9 at 91.5"))
	if shots != "" {
		// One device's messages: the filter.
		run(t, ctx, "the tail of one device",
			chromedp.SendKeys(chromedp.CSS("#tail-device"), "b9"),
			chromedp.Click(chromedp.CSS("#tail-form button[type=submit]")),
			waitText("#tail-state", "device b9"))
		publish("plant/north/b9/telemetry", `{"kind":"boiler","temperature":88}`)
		publish("plant/north/b9/telemetry", `{"kind":"boiler","temperature":93.5}`)
		run(t, ctx, "b9 in the tail", waitText("#tail", `"temperature":93.5`))
	}
	shoot(t, ctx, shots, "tail")

	run(t, ctx, "the dead letters view",
		chromedp.Click(chromedp.CSS(`nav a[data-view="deadletters"]`)),
		waitText("#deadletters", "rule efficiency failed"),
		waitText("#deadletters", "power"))
	shoot(t, ctx, shots, "deadletters")

	// The playground: a rule typed in, run over b7's last messages.
	rule := "rules:\n  - name: warm\n    match: plant/+site/+device/telemetry\n    alert:\n      when: temperature > 80\n      message: \"{{ device }} warm at {{ temperature }}\"\n"
	run(t, ctx, "the playground",
		chromedp.Click(chromedp.CSS(`nav a[data-view="playground"]`)),
		waitText("#pg-rules", "name: boiler"),
		setValue("#pg-rules", ""),
		chromedp.SendKeys(chromedp.CSS("#pg-rules"), rule),
		chromedp.SendKeys(chromedp.CSS("#pg-topic"), "plant/+/b7/#"),
		chromedp.Click(chromedp.CSS("#pg-run")),
		waitText("#pg-firing tbody", "b7 warm at 84"),
		waitText("#pg-summary", "4 messages"),
		waitText("#pg-messages", "warm: alert firing b7"))
	shootPage(t, ctx, shots, "playground")
	// A mistake shows where it is.
	run(t, ctx, "a broken rule in the playground",
		setValue("#pg-rules", "rules:\n  - name: warm\n    alert:\n      when: temperature >\n"),
		chromedp.Click(chromedp.CSS("#pg-run")),
		waitText("#pg-errors", ":4:"))

	if shots != "" {
		// The alerts, as a phone shows them.
		phone := browser(t, 390, 844)
		run(t, phone, "the alerts on a phone",
			chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(1)),
			chromedp.Navigate(page),
			chromedp.WaitVisible(chromedp.CSS("#login-form")),
			chromedp.SendKeys(chromedp.CSS("#token"), "console-s3cret"),
			chromedp.Click(chromedp.CSS("#login-form button")),
			chromedp.WaitVisible(chromedp.CSS("#view-overview")),
			chromedp.Click(chromedp.CSS(`nav a[data-view="alerts"]`)),
			waitText("#firing tbody", "b7"))
		shoot(t, phone, shots, "phone-alerts")
	}
}

// shoot saves a screenshot of the window as DIR/console-NAME.png, when
// dir is set; shootPage of the whole page.
func shoot(t *testing.T, ctx context.Context, dir, name string) {
	screenshot(t, ctx, dir, name, chromedp.CaptureScreenshot())
}

func shootPage(t *testing.T, ctx context.Context, dir, name string) {
	screenshot(t, ctx, dir, name, chromedp.FullScreenshot(100))
}

func screenshot(t *testing.T, ctx context.Context, dir, name string, capture chromedp.Action[[]byte]) {
	t.Helper()
	if dir == "" {
		return
	}
	run(t, ctx, "screenshot "+name, chromedp.Sleep(300*time.Millisecond))
	png := value(t, ctx, "screenshot "+name, capture)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "console-"+name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}
