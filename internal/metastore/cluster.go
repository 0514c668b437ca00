package metastore

import (
	"context"
	"time"
)

// Replica is one coordinator process serving the database.
type Replica struct {
	ID        string
	Addr      string // the gRPC address agents and admins reach it at
	StartedAt time.Time
	SeenAt    time.Time // its last heartbeat
	Leading   bool      // it leads the background jobs (as of SeenAt)
	Agents    int       // agent sessions it holds (as of SeenAt)
	// LeaderToken identifies its hold on the leadership while it leads
	// (PostgreSQL: the backend pid of the session holding the lock), so
	// that the registry can name the one replica that really leads (see
	// LeaderTokener) rather than the last claims of a dead one.
	LeaderToken int64
}

// LeaderTokener tells the token of the leadership's current holder (0:
// none): PostgreSQL's pg_locks.
type LeaderTokener interface {
	LeaderToken(ctx context.Context) (int64, error)
}

// NewReplicaID returns a fresh replica id: "rep_" + 20 lowercase base32
// characters.
func NewReplicaID() string { return "rep_" + randomID() }

// NewCommandID returns a fresh routed command id: "cmd_" + 20 lowercase
// base32 characters.
func NewCommandID() string { return "cmd_" + randomID() }

// AgentRoute says which replica holds an agent session's stream.
type AgentRoute struct {
	SessionID, ProjectID, ReplicaID string
	ConnectedAt                     time.Time
}

// CommandKind is what a routed command asks of an agent.
type CommandKind string

// Routed commands.
const (
	CommandFlush    CommandKind = "flush"    // Arg: the flush timeout in milliseconds
	CommandRollback CommandKind = "rollback" // Arg: the version the head now is
)

// Routed command outcomes (Command.Outcome).
const (
	OutcomeOK      = "ok"
	OutcomeNoAgent = "no_agent" // the replica holds no stream of the project (any more)
	OutcomeGone    = "gone"     // the agent left before answering
	OutcomeFailed  = "failed"   // the agent answered with an error
	OutcomeError   = "error"    // anything else (Error says)
)

// Command is a command for an agent whose stream another replica holds: a
// row of the database's mailbox, posted by the replica that got the call,
// taken and answered by the one that holds the stream.
type Command struct {
	ID        string
	ReplicaID string // the replica that is to run it
	ProjectID string
	Kind      CommandKind
	Arg       int64
	CreatedAt time.Time
	Deadline  time.Time // not taken after it
	// Set when done.
	Done    bool
	Outcome string
	Version int64
	Error   string
}

// ClusterStore is the replicas' shared state: the registry of replicas
// (heartbeats), which replica holds which agent session, and the mailbox
// of commands routed between them. Every method is safe for concurrent use
// by any number of replicas.
type ClusterStore interface {
	// BeatReplica records r (by ID) as alive now: created, or its Addr,
	// Leading and Agents updated and SeenAt set to now.
	BeatReplica(ctx context.Context, r Replica) error
	// ListReplicas returns the replicas seen at or after since, by ID.
	ListReplicas(ctx context.Context, since time.Time) ([]Replica, error)
	// ForgetReplica removes a replica and the routes it holds (it stopped,
	// or it is dead: its streams are gone).
	ForgetReplica(ctx context.Context, replicaID string) error

	// SetAgentRoute records that replicaID holds the session (replacing an
	// older route of the same session id).
	SetAgentRoute(ctx context.Context, r AgentRoute) error
	// DeleteAgentRoute removes the session's route if replicaID holds it.
	DeleteAgentRoute(ctx context.Context, sessionID, replicaID string) error
	// AgentRoutes returns the project's routes, newest first.
	AgentRoutes(ctx context.Context, projectID string) ([]AgentRoute, error)

	// PostCommand adds c (ID, ReplicaID, ProjectID, Kind, Deadline
	// required) to the mailbox.
	PostCommand(ctx context.Context, c Command) error
	// TakeCommands returns up to max commands for replicaID that are not
	// taken, done or past their deadline, oldest first, and marks them
	// taken: each command is taken once.
	TakeCommands(ctx context.Context, replicaID string, max int) ([]Command, error)
	// FinishCommand records a command's outcome; ErrNotFound if there is
	// no such command.
	FinishCommand(ctx context.Context, id, outcome string, version int64, errText string) error
	// GetCommand returns a command; ErrNotFound if there is none.
	GetCommand(ctx context.Context, id string) (Command, error)
	// DeleteCommands removes the commands created before t.
	DeleteCommands(ctx context.Context, before time.Time) (int, error)
}

// Notifier wakes replicas up when the mailbox changes (PostgreSQL's
// LISTEN/NOTIFY). Without one, replicas poll.
type Notifier interface {
	// Notify sends payload on channel to every listener.
	Notify(ctx context.Context, channel, payload string) error
	// Listen delivers the payloads sent on channel until ctx ends; the
	// returned channel is closed then (or when the connection breaks:
	// listen again).
	Listen(ctx context.Context, channel string) (<-chan string, error)
}
