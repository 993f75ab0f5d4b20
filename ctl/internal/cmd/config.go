package cmd

import (
	"fmt"
	"runtime/debug"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"skiff.dev/client/config"
	"skiff.dev/ctl/internal/printers"
)

func newConfig(o *Options) *cobra.Command {
	c := &cobra.Command{Use: "config SUBCOMMAND", Short: "Modify client config files"}
	load := func() (*config.Config, string, error) {
		p := config.Path(o.Kubeconfig)
		cfg, err := config.Load(p)
		return cfg, p, err
	}
	var raw bool
	view := &cobra.Command{
		Use:   "view",
		Short: "Display merged client config settings",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, _, err := load()
			if err != nil {
				return err
			}
			if !raw {
				for i := range cfg.Users {
					u := &cfg.Users[i].User
					if len(u.ClientCertificateData) > 0 {
						u.ClientCertificateData = []byte("REDACTED")
					}
					if len(u.ClientKeyData) > 0 {
						u.ClientKeyData = []byte("REDACTED")
					}
				}
				for i := range cfg.Clusters {
					if len(cfg.Clusters[i].Cluster.CertificateAuthorityData) > 0 {
						cfg.Clusters[i].Cluster.CertificateAuthorityData = []byte("DATA+OMITTED")
					}
				}
			}
			b, err := yaml.Marshal(cfg)
			if err != nil {
				return err
			}
			if !raw {
				// kubectl shows the placeholders, not their base64.
				s := strings.ReplaceAll(string(b), "UkVEQUNURUQ=", "REDACTED")
				s = strings.ReplaceAll(s, "REFUQStPTUlUVEVE", "DATA+OMITTED")
				b = []byte(s)
			}
			_, err = o.streams.Out.Write(b)
			return err
		},
	}
	view.Flags().BoolVar(&raw, "raw", false, "Display raw byte data and sensitive data")
	getContexts := &cobra.Command{
		Use:   "get-contexts [NAME]",
		Short: "Describe one or many contexts",
		RunE: func(_ *cobra.Command, args []string) error {
			cfg, _, err := load()
			if err != nil {
				return err
			}
			tw := printers.NewTabWriter(o.streams.Out)
			fmt.Fprintln(tw, "CURRENT\tNAME\tCLUSTER\tAUTHINFO\tNAMESPACE")
			for _, c := range cfg.Contexts {
				if len(args) > 0 && args[0] != c.Name {
					continue
				}
				cur := ""
				if c.Name == cfg.CurrentContext {
					cur = "*"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", cur, c.Name, c.Context.Cluster, c.Context.User, c.Context.Namespace)
			}
			return tw.Flush()
		},
	}
	current := &cobra.Command{
		Use:   "current-context",
		Short: "Display the current-context",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, _, err := load()
			if err != nil {
				return err
			}
			if cfg.CurrentContext == "" {
				return fmt.Errorf("current-context is not set")
			}
			fmt.Fprintln(o.streams.Out, cfg.CurrentContext)
			return nil
		},
	}
	use := &cobra.Command{
		Use:   "use-context CONTEXT_NAME",
		Short: "Set the current-context in a client config file",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			cfg, p, err := load()
			if err != nil {
				return err
			}
			if _, err := cfg.Context(args[0]); err != nil {
				return fmt.Errorf("no context exists with the name: %q", args[0])
			}
			cfg.CurrentContext = args[0]
			if err := cfg.Write(p); err != nil {
				return err
			}
			fmt.Fprintf(o.streams.Out, "Switched to context %q.\n", args[0])
			return nil
		},
	}
	var currentFlag bool
	var ns, cluster, user string
	set := &cobra.Command{
		Use:   "set-context [NAME | --current] [--cluster=cluster_nickname] [--user=user_nickname] [--namespace=namespace]",
		Short: "Set a context entry in a client config file",
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, p, err := load()
			if err != nil {
				return err
			}
			name := cfg.CurrentContext
			if !currentFlag {
				if len(args) != 1 {
					return fmt.Errorf("you must specify a non-empty context name or --current")
				}
				name = args[0]
			}
			ctx, err := cfg.Context(name)
			verb := "modified"
			if err != nil {
				cfg.Contexts = append(cfg.Contexts, config.NamedContext{Name: name})
				ctx = &cfg.Contexts[len(cfg.Contexts)-1]
				verb = "created"
			}
			if cmd.Flags().Changed("namespace") {
				ctx.Context.Namespace = ns
			}
			if cmd.Flags().Changed("cluster") {
				ctx.Context.Cluster = cluster
			}
			if cmd.Flags().Changed("user") {
				ctx.Context.User = user
			}
			if err := cfg.Write(p); err != nil {
				return err
			}
			fmt.Fprintf(o.streams.Out, "Context %q %s.\n", name, verb)
			return nil
		},
	}
	set.Flags().BoolVar(&currentFlag, "current", false, "Modify the current context")
	set.Flags().StringVar(&ns, "namespace", "", "namespace for the context entry")
	set.Flags().StringVar(&cluster, "cluster", "", "cluster for the context entry")
	set.Flags().StringVar(&user, "user", "", "user for the context entry")
	c.AddCommand(view, getContexts, current, use, set)
	return c
}

// Version is skiffctl's version, from the build's module information.
func Version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "v1.37.0-skiff"
}

func newVersion(o *Options) *cobra.Command {
	var client bool
	c := &cobra.Command{
		Use:   "version",
		Short: "Print the client and server version information",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(o.streams.Out, "Client Version: %s\n", Version())
			if client {
				return nil
			}
			cl, err := o.client(cmd.Context())
			if err != nil {
				return err
			}
			d, err := cl.Discovery(cmd.Context())
			if err != nil {
				return o.printError(err)
			}
			fmt.Fprintf(o.streams.Out, "Server Version: %s\n", d.ServerVersion)
			return nil
		},
	}
	c.Flags().BoolVar(&client, "client", false, "If true, shows client version only (no server required).")
	return c
}

func newAPIResources(o *Options) *cobra.Command {
	var namespaced string
	var output string
	c := &cobra.Command{
		Use:   "api-resources",
		Short: "Print the supported API resources on the server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := o.client(cmd.Context())
			if err != nil {
				return err
			}
			d, err := cl.Discovery(cmd.Context())
			if err != nil {
				return o.printError(err)
			}
			rs := d.Resources
			sort.SliceStable(rs, func(i, j int) bool {
				if rs[i].Group != rs[j].Group {
					return rs[i].Group < rs[j].Group
				}
				return rs[i].Resource < rs[j].Resource
			})
			tw := printers.NewTabWriter(o.streams.Out)
			if output != "name" {
				fmt.Fprintln(tw, "NAME\tSHORTNAMES\tAPIVERSION\tNAMESPACED\tKIND")
			}
			for _, r := range rs {
				if namespaced != "" && fmt.Sprint(r.Namespaced) != namespaced {
					continue
				}
				av := r.Version
				if r.Group != "" {
					av = r.Group + "/" + r.Version
				}
				if output == "name" {
					n := r.Resource
					if r.Group != "" {
						n += "." + r.Group
					}
					fmt.Fprintln(tw, n)
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\n", r.Resource, strings.Join(r.ShortNames, ","), av, r.Namespaced, r.Kind)
			}
			return tw.Flush()
		},
	}
	c.Flags().StringVar(&namespaced, "namespaced", "", "If false, non-namespaced resources will be returned, otherwise returning namespaced resources by default.")
	c.Flags().StringVarP(&output, "output", "o", "", "Output format. One of: (wide, name).")
	return c
}

func newCompletion(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:       "completion SHELL",
		Short:     "Output shell completion code for the specified shell (bash, zsh, fish)",
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"bash", "zsh", "fish"},
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(o.streams.Out, true)
			case "zsh":
				return root.GenZshCompletion(o.streams.Out)
			case "fish":
				return root.GenFishCompletion(o.streams.Out, true)
			}
			return fmt.Errorf("unsupported shell type %q", args[0])
		},
	}
}
