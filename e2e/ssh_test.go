package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"testing"
	"time"
)

// sshTimeout bounds each ssh or scp run; 64 MiB over loopback takes
// seconds, so only a hang comes near it.
const sshTimeout = 3 * time.Minute

// sshServer is sshd on a loopback port, serving the current user with a
// key of its own, and what a client needs to log in to it.
type sshServer struct {
	addr       string // 127.0.0.1:port
	key        string // the client's private key
	knownHosts string // the client's known_hosts, empty at first
	user       string
	tools      map[string]string // ssh, scp: absolute paths
}

// startSSHD runs sshd -D on a free loopback port with host and client keys
// made for the test, and returns once it listens.
func startSSHD(t *testing.T) *sshServer {
	t.Helper()
	tools := needTools(t, "sshd", "ssh", "scp", "ssh-keygen")
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	hostKey, clientKey := filepath.Join(dir, "host_ed25519"), filepath.Join(dir, "client_ed25519")
	for _, k := range []string{hostKey, clientKey} {
		r := runTool(t, time.Minute, nil, nil, tools["ssh-keygen"], "-q", "-t", "ed25519", "-N", "", "-C", "tether-e2e", "-f", k)
		r.mustSucceed(t, "ssh-keygen "+filepath.Base(k))
	}
	pub, err := os.ReadFile(clientKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	authKeys := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authKeys, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// sshd run as root refuses to start without its privilege
		// separation directory, which only the package's service creates.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("creating /run/sshd for sshd: %v", err)
		}
	}
	addr := freePort(t)
	_, port, _ := net.SplitHostPort(addr)
	cfg := filepath.Join(dir, "sshd_config")
	conf := fmt.Sprintf(`ListenAddress 127.0.0.1
Port %s
HostKey %s
AuthorizedKeysFile %s
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
StrictModes no
PidFile %s
Subsystem sftp internal-sftp
AcceptEnv none
`, port, hostKey, authKeys, filepath.Join(dir, "sshd.pid"))
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	// -e sends sshd's log to its stderr, which startProc keeps and shows
	// when the test fails.
	sshd := startProc(t, nil, tools["sshd"], "-D", "-e", "-f", cfg)
	sshd.waitLine(t, "Server listening on 127.0.0.1 port "+port, 30*time.Second)
	return &sshServer{
		addr:       addr,
		key:        clientKey,
		knownHosts: filepath.Join(dir, "known_hosts"),
		user:       u.Username,
		tools:      tools,
	}
}

// clientOpts are the options ssh and scp share: nothing from the user's
// own configuration, keys or known hosts, and no prompt ever.
func (s *sshServer) clientOpts() []string {
	return []string{
		"-F", "none",
		"-i", s.key,
		"-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + s.knownHosts,
		"-o", "StrictHostKeyChecking=accept-new",
		"-o", "BatchMode=yes",
		"-o", "ConnectTimeout=30",
	}
}

// sshRoute is one way for ssh and scp to reach the device's sshd: the
// options that pick it and the host to name.
type sshRoute struct {
	sshArgs, scpArgs []string
	host             string
	// proxied: ssh runs `tether pipe`, whose stderr is ssh's.
	proxied bool
}

// TestSSHThroughTether runs OpenSSH's ssh and scp against a real sshd
// behind `tether agent`, first through `tether pipe` as ProxyCommand, then
// through a port of `tether forward`.
func TestSSHThroughTether(t *testing.T) {
	t.Parallel()
	sshd := startSSHD(t)
	h := startProcHub(t)
	h.startAgent(t, "dev1", "ssh="+sshd.addr)

	// ssh runs the ProxyCommand through the shell with its own
	// environment, which carries TETHER_HUB and TETHER_CA.
	proxy := "ProxyCommand=" + shellQuote(h.tether) + " pipe %h ssh"
	t.Run("pipe", func(t *testing.T) {
		exerciseSSH(t, h, sshd, sshRoute{
			sshArgs: []string{"-o", proxy},
			scpArgs: []string{"-o", proxy},
			host:    "dev1",
			proxied: true,
		})
	})

	t.Run("forward", func(t *testing.T) {
		addr := h.startForward(t, "dev1", "ssh")
		host, port, _ := net.SplitHostPort(addr)
		exerciseSSH(t, h, sshd, sshRoute{
			sshArgs: []string{"-p", port},
			scpArgs: []string{"-P", port},
			host:    host,
		})
	})
}

// exerciseSSH runs a command, a 64 MiB scp both ways and a 1 MiB upload on
// ssh's stdin through route.
func exerciseSSH(t *testing.T, h *procHub, s *sshServer, route sshRoute) {
	dir := t.TempDir()
	login := s.user + "@" + route.host
	// A clean session must end `tether pipe` cleanly too: any line it
	// prints is an error, and it prints to ssh's stderr.
	quietPipe := func(what string, r toolResult) {
		t.Helper()
		if route.proxied && bytes.Contains(r.stderr, []byte("tether:")) {
			t.Errorf("%s: tether pipe complained:\n%s", what, r.stderr)
		}
	}
	ssh := func(stdin io.Reader, remote string) toolResult {
		t.Helper()
		args := append(append(s.clientOpts(), route.sshArgs...), login, remote)
		r := runTool(t, sshTimeout, h.env, stdin, s.tools["ssh"], args...)
		r.mustSucceed(t, "ssh "+remote)
		quietPipe("ssh "+remote, r)
		return r
	}
	scp := func(from, to string) {
		t.Helper()
		args := append(append(append(s.clientOpts(), "-q"), route.scpArgs...), from, to)
		r := runTool(t, sshTimeout, h.env, nil, s.tools["scp"], args...)
		r.mustSucceed(t, "scp "+from+" "+to)
		quietPipe("scp", r)
	}

	r := ssh(nil, "echo ok")
	if got := string(r.stdout); got != "ok\n" {
		t.Fatalf("ssh echo ok printed %q; stderr:\n%s", got, r.stderr)
	}

	// scp up to the device side and back down; the device is this machine,
	// so its side is a path of ours.
	local, remote, back := filepath.Join(dir, "local.bin"), filepath.Join(dir, "remote.bin"), filepath.Join(dir, "back.bin")
	want := writeRandomFile(t, local, 64<<20)
	scp(local, login+":"+remote)
	scp(login+":"+remote, back)
	if got := fileSHA256(t, remote); got != want {
		t.Errorf("file uploaded by scp differs: sha256 %x, want %x", got, want)
	}
	if got := fileSHA256(t, back); got != want {
		t.Errorf("file downloaded by scp differs: sha256 %x, want %x", got, want)
	}

	// ssh's stdin to a remote cat: ssh passes the end of its stdin on, cat
	// ends, and so does the session, with cat's status.
	input := make([]byte, 1<<20)
	if _, err := rand.Read(input); err != nil {
		t.Fatal(err)
	}
	catFile := filepath.Join(dir, "cat.bin")
	ssh(bytes.NewReader(input), "cat > "+shellQuote(catFile))
	if got := fileSHA256(t, catFile); got != sha256.Sum256(input) {
		t.Errorf("file written by remote cat differs: sha256 %x, want %x", got, sha256.Sum256(input))
	}
}

// writeRandomFile fills path with n random bytes and returns their SHA-256.
func writeRandomFile(t *testing.T, path string, n int64) [32]byte {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.Reader, n); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}
