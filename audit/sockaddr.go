package audit

import (
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"strconv"
)

// Sockaddr is a decoded SOCKADDR record. Every family decodes: the known ones into fields, the others as
// their family number and raw bytes. A short or odd address never fails; what could be read is kept.
type Sockaddr struct {
	Family   string  `json:"family"`
	Addr     string  `json:"addr,omitempty"`
	Port     *uint16 `json:"port,omitempty"`
	Path     string  `json:"path,omitempty"`     // unix: the socket path or the abstract name
	Abstract bool    `json:"abstract,omitempty"` // unix: the name is in the abstract namespace
	NLPid    *uint32 `json:"nl_pid,omitempty"`   // netlink: the peer port id
	Groups   *uint32 `json:"nl_groups,omitempty"`
	Raw      string  `json:"raw,omitempty"` // hex of the whole address, for families not decoded further
}

// Address families (linux/socket.h).
const (
	afUnspec  = 0
	afUnix    = 1
	afInet    = 2
	afInet6   = 10
	afNetlink = 16
	afPacket  = 17
)

var familyNames = map[uint16]string{
	afUnspec: "unspec", afUnix: "unix", afInet: "inet", 3: "ax25", 4: "ipx", 5: "appletalk", 9: "x25",
	afInet6: "inet6", afNetlink: "netlink", afPacket: "packet", 29: "can", 30: "tipc", 31: "bluetooth",
	38: "alg", 40: "vsock", 44: "xdp", 45: "mctp",
}

// DecodeSockaddr decodes a sockaddr as the kernel copied it from user space (host byte order for the
// family, network order for ports).
func DecodeSockaddr(b []byte) *Sockaddr {
	if len(b) < 2 {
		return &Sockaddr{Family: "unknown", Raw: hex.EncodeToString(b)}
	}
	fam := binary.LittleEndian.Uint16(b)
	sa := &Sockaddr{Family: familyNames[fam]}
	if sa.Family == "" {
		sa.Family = strconv.Itoa(int(fam))
	}
	switch fam {
	case afInet:
		if len(b) >= 8 {
			port := binary.BigEndian.Uint16(b[2:])
			sa.Port = &port
			sa.Addr = netip.AddrFrom4([4]byte(b[4:8])).String()
			return sa
		}
	case afInet6:
		if len(b) >= 24 {
			port := binary.BigEndian.Uint16(b[2:])
			sa.Port = &port
			a := netip.AddrFrom16([16]byte(b[8:24]))
			if len(b) >= 28 {
				if scope := binary.LittleEndian.Uint32(b[24:]); scope != 0 {
					a = a.WithZone(strconv.FormatUint(uint64(scope), 10))
				}
			}
			sa.Addr = a.String()
			return sa
		}
	case afUnix:
		p := b[2:]
		if len(p) > 0 && p[0] == 0 {
			// Abstract: a NUL, then the name, whose length is the address length; no terminator.
			sa.Abstract = true
			sa.Path = string(p[1:])
			return sa
		}
		for i, c := range p {
			if c == 0 {
				p = p[:i]
				break
			}
		}
		sa.Path = string(p)
		return sa
	case afNetlink:
		if len(b) >= 12 {
			pid := binary.LittleEndian.Uint32(b[4:])
			groups := binary.LittleEndian.Uint32(b[8:])
			sa.NLPid, sa.Groups = &pid, &groups
			return sa
		}
	}
	sa.Raw = hex.EncodeToString(b)
	return sa
}
