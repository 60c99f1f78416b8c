package worker

import "testing"

func TestCommitMetadataNamesItsTopic(t *testing.T) {
	for _, tc := range []struct {
		id, meta, wantID, wantRest string
	}{
		{"AbC-_9", "w1:xyz", "AbC-_9", "w1:xyz"},
		{"AbC-_9", "", "AbC-_9", ""},
		{"", "w1:xyz", "", "w1:xyz"}, // topic ID unknown: as before
	} {
		id, rest := committedTopic(bindTopic(tc.id, tc.meta))
		if id != tc.wantID || rest != tc.wantRest {
			t.Errorf("bindTopic(%q, %q) read back as %q, %q", tc.id, tc.meta, id, rest)
		}
	}
	// Metadata of a worker before topic IDs, or of another tool.
	for _, meta := range []string{"", "w1:xyz", "t:no-slash", "anything"} {
		if id, rest := committedTopic(meta); id != "" || rest != meta {
			t.Errorf("committedTopic(%q) = %q, %q; want no topic and the metadata as it is", meta, id, rest)
		}
	}
	for _, tc := range []struct {
		committed, now string
		former         bool
	}{{"a", "a", false}, {"a", "b", true}, {"", "b", false}, {"a", "", false}} {
		if got := formerTopic(tc.committed, tc.now); got != tc.former {
			t.Errorf("formerTopic(%q, %q) = %v, want %v", tc.committed, tc.now, got, tc.former)
		}
	}
}
