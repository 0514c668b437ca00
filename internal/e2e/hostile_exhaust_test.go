package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/sandkeep/sandkeep/internal/dial"
	"github.com/sandkeep/sandkeep/internal/testenv"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

// procKB reads a "VmRSS:"-style field of /proc/pid/status, in KiB.
func procKB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// serveForBackend runs the built coordinator on one of the hostile backends.
func serveForBackend(t *testing.T, coord, backend string) servedCoordinator {
	t.Helper()
	if backend != "postgres-s3" {
		return serveBinary(t, coord)
	}
	env := testenv.S3(t)
	t.Setenv("AWS_ACCESS_KEY_ID", env.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", env.SecretKey)
	return serveBinary(t, coord, "--database-url", testenv.Postgres(t), "--s3-bucket", testenv.NewBucketName(t),
		"--s3-endpoint", env.Endpoint, "--s3-region", env.Region, "--s3-path-style")
}

// Attacks 6 and 7: big messages without credentials, more calls than a token
// may have, and session streams with huge heartbeats. The coordinator (the
// real binary) must refuse them without holding their bytes: its peak RSS
// is checked and reported.
func TestHostileResourceExhaustion(t *testing.T) {
	coord, _ := buildBinaries(t)
	for _, b := range hostileBackends {
		t.Run(b.name, func(t *testing.T) {
			s := serveForBackend(t, coord, b.name)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			admin, err := dial.Dial(s.grpc, dial.Options{Token: s.adminToken})
			if err != nil {
				t.Fatal(err)
			}
			defer admin.Close()
			ac := pb.NewAdminServiceClient(admin)
			p, err := ac.CreateProject(ctx, &pb.CreateProjectRequest{Name: "flood"})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := ac.CreateSandboxToken(ctx, &pb.CreateSandboxTokenRequest{ProjectId: p.GetProject().GetId()})
			if err != nil {
				t.Fatal(err)
			}
			base := procKB(t, s.pid, "VmRSS")

			// 19 MB trees: under the message limit, so only the credentials
			// can stop them before they are read.
			big := make([]byte, 19<<20)
			flood := func(conn *grpc.ClientConn, n int) map[codes.Code]int {
				api := pb.NewAgentServiceClient(conn)
				var mu sync.Mutex
				got := map[codes.Code]int{}
				var wg sync.WaitGroup
				for range n {
					wg.Add(1)
					go func() {
						defer wg.Done()
						_, err := api.UploadTrees(ctx, &pb.UploadTreesRequest{Trees: [][]byte{big}})
						mu.Lock()
						got[status.Code(err)]++
						mu.Unlock()
					}()
				}
				wg.Wait()
				return got
			}
			anon, err := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer anon.Close()
			if got := flood(anon, 64); got[codes.Unauthenticated] != 64 {
				t.Fatalf("64 big calls without a token: %v, want 64 Unauthenticated", got)
			}
			garbage, err := dial.Dial(s.grpc, dial.Options{Token: "skt_" + strings.Repeat("a", 52)})
			if err != nil {
				t.Fatal(err)
			}
			defer garbage.Close()
			if got := flood(garbage, 64); got[codes.Unauthenticated] != 64 {
				t.Fatalf("64 big calls with an unknown token: %v, want 64 Unauthenticated", got)
			}
			anonPeak := procKB(t, s.pid, "VmHWM")

			// A valid token: at most 8 calls of it are read at once.
			sandbox, err := dial.Dial(s.grpc, dial.Options{Token: tok.GetToken()})
			if err != nil {
				t.Fatal(err)
			}
			defer sandbox.Close()
			got := flood(sandbox, 64)
			if got[codes.ResourceExhausted] == 0 {
				t.Fatalf("64 concurrent big calls of one token: %v, want some refused with ResourceExhausted", got)
			}

			// Session streams: at most 8 per project, and a heartbeat with
			// huge strings ends its stream.
			api := pb.NewAgentServiceClient(sandbox)
			var streams []pb.AgentService_SessionClient
			refused := 0
			for i := range 12 {
				st, err := api.Session(ctx)
				if err != nil {
					t.Fatal(err)
				}
				// A stream past the limit may be ended before this Send:
				// it then reports io.EOF, and Recv below the status.
				if err := st.Send(&pb.SessionRequest{Msg: &pb.SessionRequest_Heartbeat{Heartbeat: &pb.Heartbeat{SessionId: fmt.Sprintf("ses_%d", i)}}}); err != nil && !errors.Is(err, io.EOF) {
					t.Fatal(err)
				}
				streams = append(streams, st)
			}
			hugeErr := strings.Repeat("e", 9<<20)
			for i, st := range streams {
				_ = st.Send(&pb.SessionRequest{Msg: &pb.SessionRequest_Heartbeat{Heartbeat: &pb.Heartbeat{SessionId: fmt.Sprintf("ses_%d", i), LastError: hugeErr, WatchMode: hugeErr}}})
				if _, err := st.Recv(); status.Code(err) == codes.ResourceExhausted || status.Code(err) == codes.InvalidArgument {
					refused++
				} else {
					t.Fatalf("session %d after a heartbeat of 18 MB of strings: %v, want it ended", i, err)
				}
			}
			peak := procKB(t, s.pid, "VmHWM")
			t.Logf("coordinator RSS: %d MiB at rest; peak %d MiB after 128 unauthenticated 19 MB calls; peak %d MiB after 64 calls of one token and 12 session streams with 18 MB heartbeats (refused %d)",
				base>>10, anonPeak>>10, peak>>10, refused)
			if anonPeak-base > 64<<10 {
				t.Errorf("unauthenticated calls raised the coordinator's peak RSS by %d MiB; they must be refused before being read", (anonPeak-base)>>10)
			}
			// One token may have 8 calls in flight, each at most a 20 MiB
			// message held twice (as read, and decoded), plus the collector's
			// slack (GOGC=100 lets the heap reach twice the live data).
			if bound := int64(8*2*20*2) << 10; peak-base > bound {
				t.Errorf("one token raised the coordinator's peak RSS by %d MiB, want at most %d MiB (8 calls of at most 20 MiB)", (peak-base)>>10, bound>>10)
			}
			// The coordinator still serves.
			if _, err := ac.ListProjects(ctx, &pb.ListProjectsRequest{}); err != nil {
				t.Fatalf("coordinator after the flood: %v", err)
			}
		})
	}
}
