package webserver

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The config file is parsed again when it changes, and only then; a change
// that breaks it is an error until it is fixed.
func TestWebConfigFollowsChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "web-config.yml")
	write := func(content string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Now().Add(-time.Hour)
	write("basic_auth_users:\n  a: "+testHash(t, "x", 4)+"\n", base)
	w, err := loadWebConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := w.get()
	if again, _, _ := w.get(); again != first {
		t.Error("an unchanged file was parsed again")
	}
	write("basic_auth_users:\n  b: "+testHash(t, "y", 4)+"\n", base.Add(time.Second))
	c, _, err := w.get()
	if err != nil || c.Users["b"] == "" || c.Users["a"] != "" {
		t.Fatalf("after a change: %v, %v", c, err)
	}
	write("basic_auth_users:\n  b: not-a-hash\n", base.Add(2*time.Second))
	if _, _, err := w.get(); err == nil {
		t.Error("a broken file was accepted")
	}
	write("basic_auth_users:\n  c: "+testHash(t, "z", 4)+"\n", base.Add(3*time.Second))
	if c, _, err := w.get(); err != nil || c.Users["c"] == "" {
		t.Errorf("after the fix: %v, %v", c, err)
	}
	if _, err := loadWebConfig(filepath.Join(t.TempDir(), "missing.yml")); err == nil {
		t.Error("a missing file was accepted at start-up")
	}
}
