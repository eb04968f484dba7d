-- Active phone numbers are remembered by each node (docs/operations.md#number-cache). The
-- authentication epoch (0017) moves, in the same transaction, with every change of a phone
-- number — a number's auth token authenticates the carrier's webhooks, and its agent and URLs
-- route its calls —, including the changes a deleted agent cascades to its numbers. Nodes read
-- the epoch before trusting what they remember.
create trigger phone_numbers_epoch_on_insert after insert on phone_numbers
begin
    update auth_epoch set epoch = epoch + 1 where id = 1;
end;

create trigger phone_numbers_epoch_on_update after update on phone_numbers
begin
    update auth_epoch set epoch = epoch + 1 where id = 1;
end;

create trigger phone_numbers_epoch_on_delete after delete on phone_numbers
begin
    update auth_epoch set epoch = epoch + 1 where id = 1;
end;
