// Package sandboxstate is the one sandbox state type, and its legal
// transitions. The provider interface, the policy engine, the metadata
// store, the lifecycle manager and the cost model all use it (provider and
// policy re-export it under their own names as aliases: the same type).
package sandboxstate

// State is a sandbox's state in sandkeep's state machine. Providers map
// their own states onto these (each provider documents its mapping).
type State string

// The states, in the order of a sandbox's life.
const (
	Creating  State = "creating"
	Starting  State = "starting"
	Started   State = "started"
	Stopping  State = "stopping"
	Stopped   State = "stopped"
	Archived  State = "archived"
	Destroyed State = "destroyed"
	Error     State = "error"
)

// All lists every state in lifecycle order.
func All() []State {
	return []State{Creating, Starting, Started, Stopping, Stopped, Archived, Destroyed, Error}
}

// Valid reports whether s is one of the states.
func (s State) Valid() bool {
	_, ok := transitions[s]
	return ok
}

// Transitional reports whether s is a state a sandbox passes through on its
// own (creating, starting, stopping): a caller waits rather than acts.
func (s State) Transitional() bool {
	return s == Creating || s == Starting || s == Stopping
}

// transitions is the legal-transition table. destroyed is final.
var transitions = map[State][]State{
	Creating:  {Starting, Started, Error, Destroyed},
	Starting:  {Started, Error, Stopped},
	Started:   {Stopping, Error, Destroyed},
	Stopping:  {Stopped, Error},
	Stopped:   {Starting, Archived, Destroyed},
	Archived:  {Starting, Destroyed},
	Error:     {Destroyed, Starting, Stopped},
	Destroyed: {},
}

// Transition reports whether a sandbox may go from one state to another.
// Staying in the same state is not a transition (false). Unknown states
// have no transitions.
func Transition(from, to State) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}
