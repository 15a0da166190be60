package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/ratethrottle/ratethrottle/pkg/policy"
)

// loader resolves the configuration from, in increasing precedence,
// the defaults, a YAML file, the environment and the command line, and
// remembers where each value came from.
type loader struct {
	cfg    Config
	source map[string]string
}

// loadConfig returns the configuration of args and env (KEY=VALUE strings).
// It returns flag.ErrHelp when help was asked for, after printing usage to
// out.
func loadConfig(args, env []string, out io.Writer) (*Config, error) {
	l := &loader{cfg: Config{LimitFields: map[string]int64{}}, source: map[string]string{}}
	byKey := map[string]setting{}
	for _, s := range settings {
		byKey[s.key] = s
		if err := s.set(&l.cfg, s.def); err != nil {
			panic(fmt.Sprintf("default of %s: %v", s.key, err))
		}
	}

	// The command line is parsed first, to find --config, and applied last.
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	fs.SetOutput(out)
	var configPath string
	fs.StringVar(&configPath, "config", "", "YAML configuration `file` (env "+envPrefix+"CONFIG)")
	var checkPath string
	fs.StringVar(&checkPath, "check-config", "", "validate the YAML configuration `file`, its policy included, and exit (0: valid) without starting")
	var flagValues []*settingFlag
	for _, s := range settings {
		// The sources and the default end the usage's first line.
		first, rest, _ := strings.Cut(s.usage, "\n")
		usage := fmt.Sprintf("%s (env %s, yaml %s)", first, s.Env(), s.key)
		if s.def != "" && !s.secret {
			usage += fmt.Sprintf(" (default %q)", s.def)
		}
		if rest != "" {
			usage += "\n" + rest
		}
		fs.Var(&settingFlag{s: s, seen: &flagValues}, s.Flag(), usage)
	}
	fs.Usage = func() { printUsage(fs) }
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, configError("arguments", "", strings.Join(fs.Args(), " "), "the node takes no positional arguments")
	}

	envMap := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, envPrefix) {
			envMap[k] = v
		}
	}
	if checkPath != "" {
		if configPath != "" && configPath != checkPath {
			return nil, configError("config", "", configPath, "--check-config names the file to check; leave out --config")
		}
		configPath = checkPath
	}
	if configPath == "" {
		configPath = envMap[envPrefix+"CONFIG"]
	}
	if configPath != "" {
		if err := l.loadYAML(configPath, byKey); err != nil {
			return nil, err
		}
	}
	for _, s := range settings {
		if v, ok := envMap[s.Env()]; ok {
			if err := l.apply(s, v, "env "+s.Env()); err != nil {
				return nil, err
			}
		}
	}
	for k := range envMap {
		if k == envPrefix+"CONFIG" {
			continue
		}
		known := false
		for _, s := range settings {
			known = known || s.Env() == k
		}
		if !known {
			return nil, configError(k, "env", envMap[k], "unknown environment variable")
		}
	}
	for _, fv := range flagValues {
		if err := l.apply(fv.s, fv.value, "flag --"+fv.s.Flag()); err != nil {
			return nil, err
		}
	}
	if err := l.cfg.validate(func(key string) string { return l.source[key] }); err != nil {
		return nil, err
	}
	l.cfg.CheckConfig = checkPath
	return &l.cfg, nil
}

// settingFlag is a setting's command-line flag. Set only records the value
// (in seen, in command-line order): it is applied after the YAML file and
// the environment, so that it wins over them.
type settingFlag struct {
	s     setting
	value string
	seen  *[]*settingFlag
}

// String implements flag.Value; it returns the value given, if any.
func (f *settingFlag) String() string {
	if f == nil {
		return ""
	}
	return f.value
}

// Set implements flag.Value.
func (f *settingFlag) Set(v string) error {
	g := *f
	g.value = v
	*f.seen = append(*f.seen, &g)
	return nil
}

// Type names the flag's value in --help.
func (f *settingFlag) Type() string { return f.s.typ }

// printUsage prints every flag as flag.PrintDefaults does, but names a
// setting's value by its type ("duration", "host:port") instead of
// "value", and leaves the default to the usage, which states it.
func printUsage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprintf(w, "Usage of node (every setting also has an environment variable and a YAML key):\n")
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		if t, ok := f.Value.(interface{ Type() string }); ok {
			typ = t.Type()
		}
		var b strings.Builder
		fmt.Fprintf(&b, "  -%s", f.Name)
		if typ != "" {
			b.WriteString(" " + typ)
		}
		b.WriteString("\n    \t")
		b.WriteString(strings.ReplaceAll(usage, "\n", "\n    \t"))
		fmt.Fprintln(w, b.String())
	})
}

func (l *loader) apply(s setting, v, source string) error {
	if err := s.set(&l.cfg, v); err != nil {
		shown := v
		if s.secret {
			shown = "(hidden)"
		}
		return configError(s.key, source, shown, err.Error())
	}
	l.source[s.key] = source
	return nil
}

// loadYAML applies a YAML file. Mappings nest keys with dots; a sequence
// of scalars is a comma-separated list; the rooms setting also takes a
// mapping of patterns to mappings of fields.
func (l *loader) loadYAML(path string, byKey map[string]setting) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return configError("config", "", path, err.Error())
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return configError("config", "", path, err.Error())
	}
	if len(doc.Content) == 0 {
		return nil
	}
	source := "yaml " + path
	var walk func(prefix string, n *yaml.Node) error
	walk = func(prefix string, n *yaml.Node) error {
		if n.Kind != yaml.MappingNode {
			return configError(strings.TrimSuffix(prefix, "."), source, n.Value, "want a mapping")
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := prefix + n.Content[i].Value
			val := n.Content[i+1]
			if key == policySection {
				if err := l.loadPolicy(val, source); err != nil {
					return err
				}
				continue
			}
			if key == roomsKey && val.Kind == yaml.MappingNode {
				if err := l.loadRooms(val, source); err != nil {
					return err
				}
				continue
			}
			s, ok := byKey[key]
			if !ok {
				if val.Kind == yaml.MappingNode {
					if err := walk(key+".", val); err != nil {
						return err
					}
					continue
				}
				return configError(key, source, val.Value, fmt.Sprintf("unknown setting (line %d)", n.Content[i].Line))
			}
			text, err := yamlText(s, val)
			if err != nil {
				return configError(key, source, val.Value, err.Error())
			}
			if err := l.apply(s, text, source); err != nil {
				return err
			}
		}
		return nil
	}
	return walk("", doc.Content[0])
}

// yamlText turns a YAML value into the text form the setting parses.
func yamlText(s setting, n *yaml.Node) (string, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "", nil
		}
		return n.Value, nil
	case yaml.SequenceNode:
		parts := make([]string, 0, len(n.Content))
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return "", errors.New("want a list of scalars")
			}
			parts = append(parts, c.Value)
		}
		return strings.Join(parts, ","), nil
	case yaml.MappingNode:
		return "", errors.New("want a scalar or a list")
	}
	return "", errors.New("unsupported YAML value")
}

// loadPolicy reads the YAML's policy section.
func (l *loader) loadPolicy(n *yaml.Node, source string) error {
	doc, err := policy.ParseNode(n)
	if err != nil {
		return configError(policySection, source, nil, policyReason(policySection+".", err))
	}
	l.cfg.Policy = doc
	l.source[policySection] = source
	return nil
}

// loadRooms reads the YAML's deprecated rooms mapping as the rooms section
// of a policy, without the text form of the flag.
func (l *loader) loadRooms(n *yaml.Node, source string) error {
	doc, err := policy.ParseNode(&yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
		{Kind: yaml.ScalarNode, Tag: "!!str", Value: roomsKey}, n,
	}})
	if err != nil {
		return configError(roomsKey, source, nil, policyReason("", err))
	}
	l.cfg.Rooms = doc.Rooms
	l.source[roomsKey] = source
	return nil
}
