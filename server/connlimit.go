package server

import (
	"net"
	"sync"
)

// DefaultMaxConnections bounds the connections one listener holds open: well under the file
// descriptors a process gets (Go raises the soft limit to the hard one, often 1,048,576 but at
// times 4,096), so that a flood on one listener leaves room for the others and for the store.
const DefaultMaxConnections = 512

// LimitConnections accepts at most max connections on l at once. One over the limit is closed
// as soon as it is accepted, so it costs a descriptor for no longer than that, and the client
// sees the connection end rather than hang in the kernel's queue.
func LimitConnections(l net.Listener, max int) net.Listener {
	return &connLimit{Listener: l, slots: make(chan struct{}, max)}
}

type connLimit struct {
	net.Listener
	slots chan struct{}
}

func (l *connLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &limitedConn{Conn: c, release: func() { <-l.slots }}, nil
		default:
			c.Close()
		}
	}
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
