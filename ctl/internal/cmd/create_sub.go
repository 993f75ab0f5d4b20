package cmd

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	appsv1 "skiff.dev/proto/api/apps/v1"
	batchv1 "skiff.dev/proto/api/batch/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

// generator subcommands of create: each builds an object from flags and
// creates it, as kubectl's `create deployment`, `create configmap`, ...
func addCreateGenerators(o *Options, create *cobra.Command) {
	run := func(cmd *cobra.Command, obj scheme.Object, dryRun string) error {
		k, _ := scheme.ForMessage(obj)
		cl, err := o.client(cmd.Context())
		if err != nil {
			return err
		}
		ns := ""
		if k.Namespaced {
			ns = o.namespace()
			obj.GetMetadata().Namespace = ns
		}
		suffix := ""
		if dryRun == "client" {
			fmt.Fprintf(o.streams.Out, "%s created (client dry run)\n", resourceName(k, obj.GetMetadata().GetName()))
			return nil
		}
		if dryRun == "server" {
			suffix = " (server dry run)"
		}
		if _, err := cl.Resource(k, ns).Create(cmd.Context(), obj, dryRun == "server"); err != nil {
			return o.printError(err)
		}
		fmt.Fprintf(o.streams.Out, "%s created%s\n", resourceName(k, obj.GetMetadata().GetName()), suffix)
		return nil
	}
	meta := func(name string) *metav1.ObjectMeta { return &metav1.ObjectMeta{Name: name} }
	var dry string
	addDry := func(c *cobra.Command) *cobra.Command {
		c.Flags().StringVar(&dry, "dry-run", "none", `Must be "none", "server", or "client".`)
		return c
	}

	create.AddCommand(addDry(&cobra.Command{
		Use: "namespace NAME", Aliases: []string{"ns"}, Short: "Create a namespace with the specified name", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return run(cmd, &corev1.Namespace{Metadata: meta(args[0])}, dry)
		},
	}))
	create.AddCommand(addDry(&cobra.Command{
		Use: "serviceaccount NAME", Aliases: []string{"sa"}, Short: "Create a service account with the specified name", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return run(cmd, &corev1.ServiceAccount{Metadata: meta(args[0])}, dry)
		},
	}))

	var images []string
	var replicas int32
	var port int32
	deploy := addDry(&cobra.Command{
		Use: "deployment NAME --image=image [-- command] [args...]", Aliases: []string{"deploy"}, Short: "Create a deployment with the specified name",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(images) == 0 {
				return fmt.Errorf("required flag(s) \"image\" not set")
			}
			name := args[0]
			labels := map[string]string{"app": name}
			var cs []*corev1.Container
			for i, img := range images {
				c := &corev1.Container{Name: containerName(img), Image: img}
				if port > 0 {
					c.Ports = []*corev1.ContainerPort{{ContainerPort: port}}
				}
				if i == 0 && len(args) > 1 {
					c.Command = args[1:]
				}
				cs = append(cs, c)
			}
			d := &appsv1.Deployment{Metadata: &metav1.ObjectMeta{Name: name, Labels: labels}, Spec: &appsv1.DeploymentSpec{
				Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: &corev1.PodTemplateSpec{Metadata: &metav1.ObjectMeta{Labels: labels}, Spec: &corev1.PodSpec{Containers: cs}},
			}}
			return run(cmd, d, dry)
		},
	})
	deploy.Flags().StringSliceVar(&images, "image", nil, "Image names to run. A deployment can have multiple images set for multi-container pod.")
	deploy.Flags().Int32VarP(&replicas, "replicas", "r", 1, "Number of replicas to create.")
	deploy.Flags().Int32Var(&port, "port", -1, "The containerPort that this deployment exposes.")
	create.AddCommand(deploy)

	var jobImage string
	job := addDry(&cobra.Command{
		Use: "job NAME --image=image [-- command] [args...]", Short: "Create a job with the specified name", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if jobImage == "" {
				return fmt.Errorf("required flag(s) \"image\" not set")
			}
			c := &corev1.Container{Name: args[0], Image: jobImage}
			if len(args) > 1 {
				c.Command = args[1:]
			}
			j := &batchv1.Job{Metadata: meta(args[0]), Spec: &batchv1.JobSpec{Template: &corev1.PodTemplateSpec{
				Spec: &corev1.PodSpec{RestartPolicy: "Never", Containers: []*corev1.Container{c}}}}}
			return run(cmd, j, dry)
		},
	})
	job.Flags().StringVar(&jobImage, "image", "", "Image name to run.")
	create.AddCommand(job)

	var literals, files []string
	fromData := func() (map[string]string, error) {
		data := map[string]string{}
		for _, l := range literals {
			k, v, ok := strings.Cut(l, "=")
			if !ok || k == "" {
				return nil, fmt.Errorf("invalid literal source %s, expected key=value", l)
			}
			data[k] = v
		}
		for _, f := range files {
			key, path, ok := strings.Cut(f, "=")
			if !ok {
				key, path = filepath.Base(f), f
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("error reading %s: %w", path, err)
			}
			data[key] = string(b)
		}
		return data, nil
	}
	cm := addDry(&cobra.Command{
		Use: "configmap NAME [--from-file=[key=]source] [--from-literal=key1=value1]", Aliases: []string{"cm"}, Short: "Create a config map from a local file, directory or literal value",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := fromData()
			if err != nil {
				return err
			}
			return run(cmd, &corev1.ConfigMap{Metadata: meta(args[0]), Data: data}, dry)
		},
	})
	cm.Flags().StringArrayVar(&literals, "from-literal", nil, "Specify a key and literal value to insert in configmap (i.e. mykey=somevalue)")
	cm.Flags().StringArrayVar(&files, "from-file", nil, "Key file can be specified using its file path, in which case file basename will be used as configmap key, or optionally with a key and file path.")
	create.AddCommand(cm)

	var secretType string
	secret := &cobra.Command{Use: "secret", Short: "Create a secret"}
	generic := addDry(&cobra.Command{
		Use: "generic NAME [--type=string] [--from-file=[key=]source] [--from-literal=key1=value1]", Short: "Create a secret from a local file, directory, or literal value",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := fromData()
			if err != nil {
				return err
			}
			s := &corev1.Secret{Metadata: meta(args[0]), Type: secretType, Data: map[string][]byte{}}
			for k, v := range data {
				s.Data[k] = []byte(v)
			}
			return run(cmd, s, dry)
		},
	})
	generic.Flags().StringArrayVar(&literals, "from-literal", nil, "Specify a key and literal value to insert in secret (i.e. mykey=somevalue)")
	generic.Flags().StringArrayVar(&files, "from-file", nil, "Key files can be specified using their file path, in which case a default name will be given to them, or optionally with a name and file path.")
	generic.Flags().StringVar(&secretType, "type", "", "The type of secret to create")
	secret.AddCommand(generic)
	create.AddCommand(secret)

	var tcp []string
	var svcType string
	for _, typ := range []string{"clusterip", "nodeport"} {
		svc := addDry(&cobra.Command{
			Use: typ + " NAME [--tcp=<port>:<targetPort>]", Short: "Create a " + typ + " service", Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				name := args[0]
				s := &corev1.Service{Metadata: &metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
					Spec: &corev1.ServiceSpec{Selector: map[string]string{"app": name}, Type: map[string]string{"clusterip": "ClusterIP", "nodeport": "NodePort"}[svcType]}}
				for _, p := range tcp {
					port, target, _ := strings.Cut(p, ":")
					pn, err := strconv.Atoi(port)
					if err != nil {
						return fmt.Errorf("invalid port %q in --tcp", p)
					}
					sp := &corev1.ServicePort{Port: int32(pn), Protocol: "TCP"}
					if target == "" {
						sp.Name = strconv.Itoa(pn)
						target = port
					} else {
						sp.Name = port + "-" + target
					}
					if tn, err := strconv.Atoi(target); err == nil {
						sp.TargetPort = metav1.IntOrStringFromInt(int32(tn))
					} else {
						sp.TargetPort = metav1.IntOrStringFromString(target)
					}
					s.Spec.Ports = append(s.Spec.Ports, sp)
				}
				return run(cmd, s, dry)
			},
			PreRun: func(*cobra.Command, []string) { svcType = typ },
		})
		svc.Flags().StringSliceVar(&tcp, "tcp", nil, "Port pairs can be specified as '<port>:<targetPort>'.")
		if typ == "clusterip" {
			service := &cobra.Command{Use: "service", Aliases: []string{"svc"}, Short: "Create a service using a specified subcommand"}
			service.AddCommand(svc)
			create.AddCommand(service)
		} else {
			for _, c := range create.Commands() {
				if c.Name() == "service" {
					c.AddCommand(svc)
				}
			}
		}
	}
}

// containerName is kubectl's: the image's base name, without tag or digest.
func containerName(image string) string {
	base := image[strings.LastIndex(image, "/")+1:]
	if j := strings.IndexAny(base, ":@"); j >= 0 {
		base = base[:j]
	}
	return base
}
