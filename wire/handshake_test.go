package wire

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// pipe returns the two ends of a net.Pipe, closed when the test ends. Their
// deadline makes a broken test fail rather than hang.
func pipe(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	deadline := time.Now().Add(20 * time.Second)
	a.SetDeadline(deadline)
	b.SetDeadline(deadline)
	return a, b
}

// peer runs fn on its own goroutine with a Framer on conn; wait returns
// fn's error.
func peer(conn net.Conn, fn func(fr *Framer) error) (wait func() error) {
	errc := make(chan error, 1)
	go func() { errc <- fn(NewFramer(conn, conn)) }()
	return func() error { return <-errc }
}

func TestHandshake(t *testing.T) {
	for _, tc := range []struct {
		name           string
		client, server Hello
		wantClient     Hello // as the server sees it
		wantServer     Hello // as the client sees it
	}{
		{
			name:       "defaults",
			wantClient: Hello{Version: 2, MaxFrameSize: DefaultMaxFrameSize, MaxMessageSize: DefaultMaxMessageSize},
			wantServer: DefaultHello(),
		},
		{
			name:       "settings",
			client:     Hello{MaxFrameSize: 1 << 20, MaxMessageSize: 1, HeartbeatInterval: 5000},
			server:     Hello{Version: 9, MaxFrameSize: MinMaxFrameSize, MaxMessageSize: 1 << 30, MaxInFlight: 3, HeartbeatInterval: 7},
			wantClient: Hello{Version: 2, MaxFrameSize: 1 << 20, MaxMessageSize: 1, HeartbeatInterval: 5000},
			wantServer: Hello{Version: 2, MaxFrameSize: MinMaxFrameSize, MaxMessageSize: 1 << 30, MaxInFlight: 3, HeartbeatInterval: 7},
		},
		{
			name:       "newer client",
			client:     Hello{Version: 3},
			wantClient: Hello{Version: 3, MaxFrameSize: DefaultMaxFrameSize, MaxMessageSize: DefaultMaxMessageSize},
			wantServer: DefaultHello(),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := pipe(t)
			var gotClient Hello
			var serverFr *Framer
			wait := peer(b, func(fr *Framer) (err error) {
				serverFr = fr
				gotClient, err = fr.ServerHandshake(tc.server)
				if err != nil {
					return err
				}
				// The stream is in step afterwards.
				return fr.WriteResponse(1, false, nil, []byte("ready"))
			})
			fr := NewFramer(a, a)
			gotServer, err := fr.ClientHandshake(tc.client)
			if err != nil {
				t.Fatal(err)
			}
			if f, err := fr.ReadFrame(); err != nil || string(f.Payload) != "ready" {
				t.Fatalf("after the handshake: %v, %v", f.Header, err)
			}
			if err := wait(); err != nil {
				t.Fatal(err)
			}
			if gotServer != tc.wantServer || gotClient != tc.wantClient {
				t.Errorf("client saw %+v, want %+v; server saw %+v, want %+v", gotServer, tc.wantServer, gotClient, tc.wantClient)
			}
			if fr.MaxFrameSize != tc.wantClient.MaxFrameSize || serverFr.MaxFrameSize != tc.wantServer.MaxFrameSize {
				t.Errorf("Framers' MaxFrameSize %d, %d", fr.MaxFrameSize, serverFr.MaxFrameSize)
			}
		})
	}
}

// readConnError reads one frame, which must be a connection-level ERROR.
func readConnError(fr *Framer) (Code, string, error) {
	f, err := fr.ReadFrame()
	if err != nil {
		return 0, "", err
	}
	if f.Type != TypeError || f.ID != 0 {
		return 0, "", errors.New("got " + f.Header.String() + ", want a connection-level ERROR")
	}
	code, _, msg, err := ParseError(f.ID, f.Flags, f.Payload)
	return code, string(msg), err
}

// The server refuses what is not a version 2 HELLO.
func TestServerHandshakeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name     string
		first    []byte // what the client sends
		wantCode Code
		wantMsg  string
		wantErr  error
	}{
		{"v1 REQUEST", AppendRequest(nil, 1, false, 1000, "echo", nil, []byte("hi")), CodeUnsupportedVersion, "speaks tcppro protocol version 2", ErrProtocol},
		{"v1 PING", AppendPing(nil, 1), CodeUnsupportedVersion, "speaks tcppro protocol version 2", ErrProtocol},
		{"v1 large REQUEST, header only", header(1<<20, 1, 0, 0, 1), CodeUnsupportedVersion, "speaks tcppro protocol version 2", ErrProtocol},
		{"HTTP", []byte("GET / HTTP/1.1\r\n"), CodeUnsupportedVersion, "speaks tcppro protocol version 2", ErrProtocol},
		{"HELLO version 1", frame(TypeHello, 0, 0, 0, 1, 0, 0), CodeUnsupportedVersion, "version 2, the client 1", ErrUnsupportedVersion},
		{"bad HELLO", frame(TypeHello, 0, 0, cat([]byte{0, 2, 0, 0}, setting(SettingMaxFrameSize, 1))...), CodeProtocol, "MAX_FRAME_SIZE = 1", ErrProtocol},
		{"HELLO with an id", header(4, 7, 0, 0, 1), CodeProtocol, "HELLO with id 1", ErrProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := pipe(t)
			wait := peer(b, func(fr *Framer) error {
				_, err := fr.ServerHandshake(Hello{})
				return err
			})
			if _, err := a.Write(tc.first); err != nil {
				t.Fatal(err)
			}
			code, msg, err := readConnError(NewFramer(nil, a))
			if err != nil || code != tc.wantCode || !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("client read %v %q, %v; want %v saying %q", code, msg, err, tc.wantCode, tc.wantMsg)
			}
			if err := wait(); !errors.Is(err, tc.wantErr) {
				t.Errorf("ServerHandshake = %v, want %v", err, tc.wantErr)
			}
		})
	}
	// I/O errors are returned as they are.
	a, b := pipe(t)
	a.Close()
	if _, err := NewFramer(b, b).ServerHandshake(Hello{}); err != io.EOF {
		t.Errorf("closed connection: %v, want io.EOF", err)
	}
}

// The client reports a server's refusal, and refuses a bad server HELLO.
func TestClientHandshakeFails(t *testing.T) {
	for _, tc := range []struct {
		name      string
		client    Hello
		server    []byte // the server's first frame, after it read the client's HELLO
		wantErr   error
		wantRefus Code // what the client answers, 0 for nothing
		check     func(t *testing.T, err error)
	}{
		{name: "BUSY", server: AppendError(nil, 0, CodeBusy, nil, "server full"), wantErr: ErrHandshake, check: func(t *testing.T, err error) {
			var he *HandshakeError
			if !errors.As(err, &he) || he.Code != CodeBusy || he.Message != "server full" || !he.Code.Retryable() || !strings.Contains(err.Error(), "BUSY: server full") {
				t.Errorf("err = %v", err)
			}
		}},
		{name: "SHUTTING_DOWN", server: AppendError(nil, 0, CodeShuttingDown, nil, ""), wantErr: ErrHandshake},
		{name: "UNSUPPORTED_VERSION", client: Hello{Version: 1}, server: AppendError(nil, 0, CodeUnsupportedVersion, nil, "v2 only"), wantErr: ErrHandshake},
		{name: "PING first", server: AppendPing(nil, 1), wantErr: ErrProtocol},
		{name: "ERROR with an id", server: AppendError(nil, 1, CodeApplication, nil, ""), wantErr: ErrProtocol},
		{name: "RESPONSE first", server: AppendResponse(nil, 1, false, nil, nil), wantErr: ErrProtocol},
		{name: "malformed frame", server: header(0, 50, 0, 0, 0), wantErr: ErrProtocol},
		{name: "large frame", server: header(1<<20, byte(TypeData), 0, 0, 1), wantErr: ErrProtocol},
		{name: "version 3", server: AppendHello(nil, Hello{Version: 3, MaxFrameSize: MinMaxFrameSize, MaxInFlight: 1}), wantErr: ErrUnsupportedVersion, wantRefus: CodeUnsupportedVersion},
		{name: "version 1", server: AppendHello(nil, Hello{Version: 1, MaxFrameSize: MinMaxFrameSize, MaxInFlight: 1}), wantErr: ErrUnsupportedVersion, wantRefus: CodeUnsupportedVersion},
		{name: "version above the client's", client: Hello{Version: 1}, server: AppendHello(nil, Hello{Version: 2, MaxFrameSize: MinMaxFrameSize, MaxInFlight: 1}), wantErr: ErrUnsupportedVersion, wantRefus: CodeUnsupportedVersion},
		{name: "MAX_IN_FLIGHT 0", server: AppendHello(nil, Hello{Version: 2, MaxFrameSize: MinMaxFrameSize}), wantErr: ErrProtocol, wantRefus: CodeProtocol},
		{name: "bad HELLO", server: AppendHello(nil, Hello{Version: 2, MaxFrameSize: 100, MaxInFlight: 1}), wantErr: ErrProtocol, wantRefus: CodeProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := pipe(t)
			wait := peer(b, func(fr *Framer) error {
				if f, err := fr.ReadFrame(); err != nil || f.Type != TypeHello {
					return errors.New("server: no HELLO first")
				}
				if _, err := b.Write(tc.server); err != nil {
					return err
				}
				// What the client answers, if anything, then its close.
				code, _, err := readConnError(fr)
				switch {
				case tc.wantRefus == 0 && err != io.EOF:
					return errors.New("the client answered: " + code.String())
				case tc.wantRefus != 0 && (err != nil || code != tc.wantRefus):
					return errors.New("the client answered " + code.String() + ", want " + tc.wantRefus.String())
				}
				return nil
			})
			_, err := NewFramer(a, a).ClientHandshake(tc.client)
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("ClientHandshake = %v, want %v", err, tc.wantErr)
			}
			if tc.check != nil {
				tc.check(t, err)
			}
			a.Close()
			if err := wait(); err != nil {
				t.Error(err)
			}
		})
	}
}
