package sandboxstate

import "testing"

func TestTransitions(t *testing.T) {
	for _, s := range All() {
		if !s.Valid() {
			t.Errorf("%s not valid", s)
		}
		if Transition(s, s) {
			t.Errorf("%s -> %s counts as a transition", s, s)
		}
	}
	if len(transitions[Destroyed]) != 0 {
		t.Error("destroyed is not final")
	}
	for _, tt := range []struct {
		from, to State
		want     bool
	}{
		{Started, Stopping, true}, {Stopped, Started, false}, {Error, Starting, true}, {Destroyed, Started, false}, {"bogus", Started, false},
	} {
		if got := Transition(tt.from, tt.to); got != tt.want {
			t.Errorf("Transition(%s, %s) = %v", tt.from, tt.to, got)
		}
	}
	if State("bogus").Valid() || !Stopping.Transitional() || Started.Transitional() {
		t.Error("Valid/Transitional")
	}
}
