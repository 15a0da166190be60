package deploy

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// synthetic are the series Prometheus itself adds to every target.
var synthetic = map[string]bool{"up": true, "scrape_duration_seconds": true}

var promql = parser.NewParser(parser.Options{})

// metricNames parses expr and returns the metric names its selectors use;
// a selector without a name is an error (it would match every series).
func metricNames(expr string) ([]string, error) {
	e, err := promql.ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var names []string
	var bad error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		if name == "" {
			bad = fmt.Errorf("selector %s has no metric name", vs)
		}
		names = append(names, name)
		return nil
	})
	return names, bad
}

// checkNames reports every name the node does not export.
func checkNames(t *testing.T, where string, names []string, known map[string]bool) {
	t.Helper()
	for _, n := range names {
		if !known[n] && !synthetic[n] {
			t.Errorf("%s: metric %q is not exported by the node", where, n)
		}
	}
}

func TestAlertRules(t *testing.T) {
	known := seriesNames(nodeMetrics(t))
	groups, errs := rulefmt.ParseFile("prometheus/alerts.yml", false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Error(err)
	}
	if groups == nil {
		t.FailNow()
	}
	var alerts []string
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("rule %q is not an alert", r.Record)
				continue
			}
			alerts = append(alerts, r.Alert)
			names, err := metricNames(r.Expr)
			if err != nil {
				t.Errorf("%s: %v", r.Alert, err)
			}
			checkNames(t, r.Alert, names, known)
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: wants a severity label and summary and description annotations", r.Alert)
			}
		}
	}
	// The conditions an operator must hear about.
	for _, want := range []string{"RateThrottleNodeDown", "RateThrottleNodeNotReady", "RateThrottleStoreDown", "RateThrottleSyncLagHigh",
		"RateThrottleEventsDropped", "RateThrottleSendQueueOverflows", "RateThrottleViolationSpike"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s", want)
		}
	}
}

// grafanaVar is a dashboard variable reference: $name, ${name} or
// ${name:format}.
var grafanaVar = regexp.MustCompile(`\$\{?(\w+)(?::\w+)?\}?`)

// expand replaces the dashboard's variables as Grafana would before
// sending a query: intervals by a duration, the job and instance
// variables (used only in =~ matchers) by a regular expression.
func expand(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		name := grafanaVar.FindStringSubmatch(v)[1]
		if strings.HasPrefix(name, "__") {
			return "5m"
		}
		return ".*"
	})
}

type dashboard struct {
	Title      string `json:"title"`
	UID        string `json:"uid"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos *struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

func TestGrafanaDashboard(t *testing.T) {
	known := seriesNames(nodeMetrics(t))
	b, err := os.ReadFile("grafana/ratethrottle.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" {
		t.Error("the dashboard needs a uid and a title")
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type != "query" {
			continue
		}
		// label_values(<selector>, label): the selector is PromQL.
		m := regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`).FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("variable %s: definition %q is not label_values(selector, label)", v.Name, v.Definition)
			continue
		}
		names, err := metricNames(expand(m[1]))
		if err != nil {
			t.Errorf("variable %s: %v", v.Name, err)
		}
		checkNames(t, "variable "+v.Name, names, known)
	}
	if vars["datasource"] != "datasource" {
		t.Errorf("the dashboard is not templated on the data source: variables %v", vars)
	}
	var flat []panel
	for _, p := range d.Panels {
		flat = append(flat, p)
		flat = append(flat, p.Panels...)
	}
	ids := map[int]bool{}
	var titles []string
	exprs := 0
	for _, p := range flat {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos == nil || (p.Type != "row" && (p.GridPos.W == 0 || p.GridPos.H == 0)) {
			t.Errorf("panel %q has no size", p.Title)
		}
		if p.Type == "row" {
			continue
		}
		titles = append(titles, p.Title)
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the ${datasource} variable", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs++
			names, err := metricNames(expand(tg.Expr))
			if err != nil {
				t.Errorf("panel %q query %s: %v\n%s", p.Title, tg.RefID, err, tg.Expr)
			}
			checkNames(t, fmt.Sprintf("panel %q", p.Title), names, known)
			if !strings.Contains(tg.Expr, `instance=~"$instance"`) {
				t.Errorf("panel %q query %s ignores the instance variable", p.Title, tg.RefID)
			}
		}
	}
	t.Logf("%d panels, %d queries", len(titles), exprs)
	all := strings.ToLower(strings.Join(titles, "\n"))
	for _, want := range []string{"decisions per second, cluster", "violations per second by type", "connections per node", "sync lag per node", "kv writes per second",
		"allowed decisions per second per node", "denied decisions per second per node"} {
		if !strings.Contains(all, want) {
			t.Errorf("no panel %q", want)
		}
	}
}
