package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// globals are the connection flags every server command takes.
type globals struct {
	server  string
	token   string
	tls     bool
	ca      string
	cert    string
	key     string
	timeout time.Duration
}

func defaultGlobals() globals {
	g := globals{server: "127.0.0.1:7443", timeout: 30 * time.Second}
	if v := os.Getenv("VIGIL_SERVER"); v != "" {
		g.server = v
	}
	g.token = os.Getenv("VIGIL_TOKEN")
	return g
}

// register adds the connection flags to fs with g's current values as defaults, so that the
// same flags work before and after the subcommand.
func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.server, "server", g.server, "server address host:port, or several replicas' as host:port,host:port,… (also VIGIL_SERVER); a name with several DNS records reaches each")
	fs.StringVar(&g.token, "token", g.token, "bearer token (also VIGIL_TOKEN)")
	fs.BoolVar(&g.tls, "tls", g.tls, "connect with TLS")
	fs.StringVar(&g.ca, "ca", g.ca, "CA certificate (PEM) to verify the server with; implies --tls")
	fs.StringVar(&g.cert, "cert", g.cert, "client certificate (PEM) for a server with --client-ca, instead of a token; implies --tls")
	fs.StringVar(&g.key, "key", g.key, "the client certificate's private key (PEM)")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "deadline for each call")
}

// bearer sends the token with every call.
type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.secure }

func (g *globals) dial() (*grpc.ClientConn, error) {
	secure := g.tls || g.ca != "" || g.cert != ""
	creds := insecure.NewCredentials()
	if secure {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if (g.cert == "") != (g.key == "") {
			return nil, fmt.Errorf("--cert and --key: give both or neither")
		}
		if g.cert != "" {
			pair, err := tls.LoadX509KeyPair(g.cert, g.key)
			if err != nil {
				return nil, fmt.Errorf("--cert/--key: %w", err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		if g.ca != "" {
			pem, err := os.ReadFile(g.ca)
			if err != nil {
				return nil, fmt.Errorf("--ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--ca: %s holds no PEM certificate", g.ca)
			}
			cfg.RootCAs = pool
		}
		creds = credentials.NewTLS(cfg)
	}
	// Calls spread over every replica that answers; a stream broken by a replica's death is
	// opened again on one that is up.
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin": {}}]}`)}
	if g.token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token: g.token, secure: secure}))
	}
	target, replicas, err := replicaTarget(g.server)
	if err != nil {
		return nil, err
	}
	if replicas != nil {
		opts = append(opts, grpc.WithResolvers(replicas))
	}
	return grpc.NewClient(target, opts...)
}

// replicaTarget turns --server into a gRPC target. One address is dialled as given (a DNS
// name resolves to all its records). Several, separated by commas, become one channel over
// all of them through a fixed resolver; each keeps its own host name for TLS.
func replicaTarget(server string) (string, *manual.Resolver, error) {
	if !strings.Contains(server, ",") {
		return server, nil, nil
	}
	var addrs []resolver.Address
	for _, a := range strings.Split(server, ",") {
		a = strings.TrimSpace(a)
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			return "", nil, fmt.Errorf("--server: %q is not host:port", a)
		}
		addrs = append(addrs, resolver.Address{Addr: a, ServerName: host})
	}
	r := manual.NewBuilderWithScheme("vigil-replicas")
	r.InitialState(resolver.State{Addresses: addrs})
	return "vigil-replicas:///vigild", r, nil
}

func (g *globals) context() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), g.timeout)
}

// connect dials the server and gives a context with the call deadline; done releases both.
func (g *globals) connect() (conn *grpc.ClientConn, ctx context.Context, done func(), err error) {
	conn, err = g.dial()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := g.context()
	return conn, ctx, func() { cancel(); conn.Close() }, nil
}
