// The protocol's objects and frames (docs/protocol.md), with the wire's field names.

export interface User {
  id: string;
  username: string;
  display_name: string;
  created_at?: string;
}

export interface Message {
  id: string;
  room_id: string;
  seq: number;
  sender_id: string;
  client_id: string;
  text: string;
  created_at: string;
  edited_at?: string | null;
  deleted?: boolean;
  deleted_at?: string | null;
  edits?: { text: string; edited_at: string }[];
  reactions?: Record<string, string[]>;
}

export interface Room {
  id: string;
  kind: "group" | "direct";
  name: string | null;
  created_by?: string;
  created_at?: string;
  last_activity_at?: string;
  last_seq: number;
  last_message?: Message | null;
  role?: string | null;
  last_read_seq?: number;
  unread?: number;
  members?: Member[];
}

export interface Member {
  room_id: string;
  user_id: string;
  role: string;
  joined_at?: string;
  last_read_seq?: number;
  username: string;
  display_name: string;
}

export interface Page {
  messages: Message[];
  has_more: boolean;
}

export interface Tokens {
  accessToken: string;
  refreshToken: string;
  /** Date.now() when the access token expires */
  expiresAt: number;
  /** seconds */
  lifetime: number;
}

/** Events of a Client: the server's frames (typed) and the client's own connection events. */
export type ClientEvent =
  | { type: "ready"; user_id: string; rooms: string[] }
  | { type: "message"; room_id: string; seq: number; message: Message }
  | { type: "message_edited"; room_id: string; seq: number; message: Message }
  | { type: "message_deleted"; room_id: string; seq: number; message: Message }
  | { type: "reaction"; room_id: string; seq: number; message: Message }
  | { type: "read"; room_id: string; user_id: string; seq: number }
  | { type: "typing"; room_id: string; user_id: string }
  | { type: "presence"; user_id: string; online: boolean }
  | { type: "room_added"; room_id: string; room?: Room }
  | { type: "room_removed"; room_id: string }
  | { type: "resumed"; rooms: Record<string, number> }
  | {
      type: "error";
      code: string;
      message: string;
      room_id?: string;
      room_ids?: string[];
    }
  | { type: "connected"; attempt: number }
  | { type: "reconnecting"; error: Error; delay: number; attempt: number }
  | { type: "disconnected"; error: Error | null }
  | { type: "tokens"; tokens: Tokens };

export type EventType = ClientEvent["type"];
export type EventOf<T extends EventType> = Extract<ClientEvent, { type: T }>;
