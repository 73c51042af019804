package collector

import (
	"errors"
	"strings"
	"testing"

	"github.com/alecthomas/kingpin/v2"
)

// testApp is an application with one flag of each kind ParseFlags wraps,
// and a check on one of them registered only for this test.
func testApp(t *testing.T) (*kingpin.Application, *int) {
	t.Helper()
	app := kingpin.New("test", "")
	app.Terminate(nil)
	n := app.Flag("test.count", "").Default("3").Int()
	app.Flag("test.name", "").Default("x").String()
	app.Flag("test.on", "").Default("true").Bool()
	app.Flag("test.mode", "").Default("a").Enum("a", "b")
	app.Flag("test.item", "").Strings()
	saved := flagChecks
	t.Cleanup(func() { flagChecks = saved })
	flagChecks = nil
	RegisterFlagCheck("test.count", func() error {
		if *n < 1 || *n > 10 {
			return errors.New("must be between 1 and 10")
		}
		return nil
	})
	return app, n
}

func TestParseFlagsNamesTheFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string // "" for success
	}{
		{nil, ""},
		{[]string{"--test.count=10", "--no-test.on", "--test.mode=b", "--test.item=a", "--test.item=b"}, ""},
		{[]string{"--test.count=abc"}, `--test.count: invalid value "abc"`},
		{[]string{"--test.count=0"}, "--test.count: must be between 1 and 10"},
		{[]string{"--test.count=11"}, "--test.count: must be between 1 and 10"},
		{[]string{"--test.mode=c"}, `--test.mode: invalid value "c"`},
	} {
		app, _ := testApp(t)
		err := ParseFlags(app, c.args)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%v: %v", c.args, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%v: error %v, want one containing %q", c.args, err, c.want)
		}
	}
}

// Wrapping the values keeps what kingpin shows in --help: bool flags stay
// negatable, repeatable flags repeatable, string defaults quoted.
func TestParseFlagsKeepsHelp(t *testing.T) {
	app, _ := testApp(t)
	if err := ParseFlags(app, nil); err != nil {
		t.Fatal(err)
	}
	var help strings.Builder
	app.UsageWriter(&help)
	app.Usage(nil)
	for _, want := range []string{"--[no-]test.on", `--test.name="x"`, "--test.count=3", "--test.item=TEST.ITEM ..."} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, help.String())
		}
	}
}
