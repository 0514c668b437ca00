package dial

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// replica serves the health service on loopback, answering with its name
// as the service it knows.
func replica(t *testing.T, name string) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	h := health.NewServer()
	h.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, h)
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return ln.Addr().String(), s.Stop
}

// TestDialFailsOver: with a list of replicas the connection uses the first
// that answers and moves to another when its replica dies.
func TestDialFailsOver(t *testing.T) {
	a, stopA := replica(t, "a")
	b, _ := replica(t, "b")
	conn, err := Dial(a+", "+b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	serves := func(name string) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: name}, grpc.WaitForReady(true))
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	}
	if !serves("a") {
		t.Fatal("the first replica of the list did not answer")
	}
	stopA()
	// The call in flight when the replica dies fails (UNAVAILABLE; the
	// sandkeep services' retry policy retries it); the next ones wait for
	// the connection to the second replica.
	for attempt := 1; !serves("b"); attempt++ {
		if attempt == 3 {
			t.Fatal("after the first replica died, the connection did not move to the second")
		}
	}
}

func TestDialRefusesAnEmptyListEntry(t *testing.T) {
	if _, err := Dial("127.0.0.1:1,,127.0.0.1:2", Options{}); err == nil {
		t.Fatal("a list with an empty address was accepted")
	}
}
