package rules

import (
	"bytes"
	_ "embed"
	"fmt"
	"text/template"
)

// The template uses << >> as delimiters: PromQL needs [ ] for ranges and
// the alert annotations need {{ }} for Prometheus' own templating.
//
//go:embed rules.yml.tmpl
var rulesTemplate string

// Render returns the rules file for the given settings.
func Render(s Settings) ([]byte, error) {
	tmpl, err := template.New("rules.yml").Delims("<<", ">>").Option("missingkey=error").Parse(rulesTemplate)
	if err != nil {
		return nil, fmt.Errorf("parsing rules template: %w", err)
	}
	var out bytes.Buffer
	if err := tmpl.Execute(&out, s); err != nil {
		return nil, fmt.Errorf("rendering rules: %w", err)
	}
	return out.Bytes(), nil
}
