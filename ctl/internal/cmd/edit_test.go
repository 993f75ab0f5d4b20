package cmd

import (
	"fmt"
	"testing"
)

// The editor runs as kubectl runs it.
func TestEditorArgs(t *testing.T) {
	t.Setenv("SHELL", "/bin/sh")
	for _, tc := range []struct{ kube, editor, want string }{
		{editor: "", want: `["vi" "/f"]`},
		{editor: "nano", want: `["nano" "/f"]`},
		{editor: "code --wait", want: `["code" "--wait" "/f"]`},
		{editor: `sed -i s/a\ b/c\ d/`, want: `["/bin/sh" "-c" "sed -i s/a\\ b/c\\ d/ \"/f\""]`},
		{editor: `emacs -nw "x"`, want: `["/bin/sh" "-c" "emacs -nw \"x\" \"/f\""]`},
		{kube: "kak", editor: "nano", want: `["kak" "/f"]`},
	} {
		t.Setenv("KUBE_EDITOR", tc.kube)
		t.Setenv("EDITOR", tc.editor)
		if got := fmt.Sprintf("%q", editorArgs("/f")); got != tc.want {
			t.Errorf("KUBE_EDITOR=%q EDITOR=%q: %s, want %s", tc.kube, tc.editor, got, tc.want)
		}
	}
}
