-- Sample schema with PII for pgguard tests and the demo. All values are fake: names are
-- invented, SSNs are SSN-shaped, cards pass the Luhn check but belong to no one, IBANs pass
-- mod-97. Load into an empty database (psql -v ON_ERROR_STOP=1 -f pii_schema.sql).

DROP VIEW IF EXISTS user_contacts;
DROP TABLE IF EXISTS notes;
DROP TABLE IF EXISTS users;

CREATE TABLE users (
    id          integer PRIMARY KEY,
    name        text NOT NULL,
    email       text NOT NULL UNIQUE,
    ssn         text NOT NULL,
    card_number text,
    phone       varchar(32),
    profile     jsonb,
    created_at  timestamptz NOT NULL DEFAULT '2024-01-01 00:00:00+00'
);

CREATE TABLE notes (
    id      serial PRIMARY KEY,
    user_id integer NOT NULL REFERENCES users (id),
    body    text NOT NULL
);

CREATE VIEW user_contacts AS
    SELECT u.id, u.name, u.email, u.phone, lower(u.email) AS email_lower
      FROM users u;

INSERT INTO users (id, name, email, ssn, card_number, phone, profile, created_at) VALUES
    (1, 'Alice Anderson', 'alice.anderson@example.com', '432-29-7468', '4181 5908 3016 6131', '+1 293 555 7955', '{"address": "61 Main St, Springfield", "dob": "1986-02-13", "contacts": [{"kind": "email", "value": "alice@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 2013"}], "tax_id": "432-29-7468"}', '2024-01-02 09:00:00+00'),
    (2, 'Bob Brown', 'bob.brown@example.com', '293-57-2596', '4909378657975433', '(385) 555-4999', '{"address": "84 Main St, Springfield", "dob": "1986-05-18", "contacts": [{"kind": "email", "value": "bob@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 9111"}], "tax_id": "293-57-2596"}', '2024-01-03 09:00:00+00'),
    (3, 'Carol Chen', 'carol.chen@example.com', '180-81-6140', '375979711471047', '+1 863 555 8301', '{"address": "292 Main St, Springfield", "dob": "1995-07-15", "contacts": [{"kind": "email", "value": "carol@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 1369"}], "tax_id": "180-81-6140"}', '2024-01-04 09:00:00+00'),
    (4, 'David Dubois', 'david.dubois@example.com', '663-45-3243', '6011 8465 6321 2232', '(875) 555-4822', '{"address": "13 Main St, Springfield", "dob": "1981-03-14", "contacts": [{"kind": "email", "value": "david@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 5619"}], "tax_id": "663-45-3243"}', '2024-01-05 09:00:00+00'),
    (5, 'Erin Evans', 'erin.evans@example.com', '502-60-7536', '6011176031372156', '+1 816 555 1861', '{"address": "105 Main St, Springfield", "dob": "1950-03-18", "contacts": [{"kind": "email", "value": "erin@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 2662"}], "tax_id": "502-60-7536"}', '2024-01-06 09:00:00+00'),
    (6, 'Frank Fischer', 'frank.fischer@example.com', '596-49-2407', '5115472803852807', '(977) 555-9652', '{"address": "306 Main St, Springfield", "dob": "1991-02-14", "contacts": [{"kind": "email", "value": "frank@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 9493"}], "tax_id": "596-49-2407"}', '2024-01-07 09:00:00+00'),
    (7, 'Grace Garcia', 'grace.garcia@example.com', '305-76-9073', '3700 4743 9575 518', '+1 426 555 2673', '{"address": "233 Main St, Springfield", "dob": "1980-04-15", "contacts": [{"kind": "email", "value": "grace@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 4348"}], "tax_id": "305-76-9073"}', '2024-01-08 09:00:00+00'),
    (8, 'Heidi Hughes', 'heidi.hughes@example.com', '187-30-3785', '5102972997528829', '(222) 555-1233', '{"address": "819 Main St, Springfield", "dob": "1996-02-18", "contacts": [{"kind": "email", "value": "heidi@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 3281"}], "tax_id": "187-30-3785"}', '2024-01-09 09:00:00+00'),
    (9, 'Ivan Ito', 'ivan.ito@example.com', '235-17-6796', '6011986828288070', '+1 388 555 1064', '{"address": "795 Main St, Springfield", "dob": "1959-03-12", "contacts": [{"kind": "email", "value": "ivan@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 8757"}], "tax_id": "235-17-6796"}', '2024-01-10 09:00:00+00'),
    (10, 'Judy Jensen', 'judy.jensen@example.com', '564-81-1456', '4759 8983 4788 7830', '(916) 555-9572', '{"address": "898 Main St, Springfield", "dob": "1966-09-13", "contacts": [{"kind": "email", "value": "judy@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 8332"}], "tax_id": "564-81-1456"}', '2024-01-11 09:00:00+00'),
    (11, 'Mallory Kowalski', 'mallory.kowalski@example.com', '475-28-5146', '5173167232686565', '+1 401 555 6842', '{"address": "327 Main St, Springfield", "dob": "1955-06-10", "contacts": [{"kind": "email", "value": "mallory@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 6537"}], "tax_id": "475-28-5146"}', '2024-01-12 09:00:00+00'),
    (12, 'Niaj Lopez', 'niaj.lopez@example.com', '286-44-3122', '6011462889751406', '(905) 555-4003', '{"address": "436 Main St, Springfield", "dob": "1954-05-10", "contacts": [{"kind": "email", "value": "niaj@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 2451"}], "tax_id": "286-44-3122"}', '2024-01-13 09:00:00+00'),
    (13, 'Olivia Meyer', 'olivia.meyer@example.com', '233-15-9632', '5112 4023 4483 4785', '+1 889 555 3914', '{"address": "278 Main St, Springfield", "dob": "1972-01-14", "contacts": [{"kind": "email", "value": "olivia@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 1605"}], "tax_id": "233-15-9632"}', '2024-01-14 09:00:00+00'),
    (14, 'Peggy Nakamura', 'peggy.nakamura@example.com', '451-35-3289', '6011502014620164', '(719) 555-5619', '{"address": "614 Main St, Springfield", "dob": "1965-05-10", "contacts": [{"kind": "email", "value": "peggy@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 8527"}], "tax_id": "451-35-3289"}', '2024-01-15 09:00:00+00'),
    (15, 'Rupert Okafor', 'rupert.okafor@example.com', '466-33-1017', '376174833801417', '+1 348 555 7545', '{"address": "601 Main St, Springfield", "dob": "1952-07-10", "contacts": [{"kind": "email", "value": "rupert@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 5909"}], "tax_id": "466-33-1017"}', '2024-01-16 09:00:00+00'),
    (16, 'Sybil Petrov', 'sybil.petrov@example.com', '243-77-9263', '4931 0025 1678 0089', '(898) 555-5006', '{"address": "502 Main St, Springfield", "dob": "1966-01-17", "contacts": [{"kind": "email", "value": "sybil@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 2148"}], "tax_id": "243-77-9263"}', '2024-01-17 09:00:00+00'),
    (17, 'Trent Quinn', 'trent.quinn@example.com', '492-19-8848', '370931925449926', '+1 213 555 8903', '{"address": "63 Main St, Springfield", "dob": "1981-05-11", "contacts": [{"kind": "email", "value": "trent@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 4566"}], "tax_id": "492-19-8848"}', '2024-01-18 09:00:00+00'),
    (18, 'Uma Rossi', 'uma.rossi@example.com', '561-44-7338', '5131912845298410', '(921) 555-6983', '{"address": "237 Main St, Springfield", "dob": "1981-08-16", "contacts": [{"kind": "email", "value": "uma@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 1406"}], "tax_id": "561-44-7338"}', '2024-01-19 09:00:00+00'),
    (19, 'Victor Schmidt', 'victor.schmidt@example.com', '433-53-7525', '4304 4516 6915 6408', '+1 488 555 2666', '{"address": "53 Main St, Springfield", "dob": "1992-05-12", "contacts": [{"kind": "email", "value": "victor@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 5084"}], "tax_id": "433-53-7525"}', '2024-01-20 09:00:00+00'),
    (20, 'Walter Tanaka', 'walter.tanaka@example.com', '394-72-1802', '5127654444634787', '(885) 555-7461', '{"address": "123 Main St, Springfield", "dob": "1960-03-11", "contacts": [{"kind": "email", "value": "walter@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 4405"}], "tax_id": "394-72-1802"}', '2024-01-21 09:00:00+00'),
    (21, 'Xena Umar', 'xena.umar@example.com', '451-81-2492', '373549306668364', '+1 477 555 6541', '{"address": "771 Main St, Springfield", "dob": "1953-08-14", "contacts": [{"kind": "email", "value": "xena@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 6900"}], "tax_id": "451-81-2492"}', '2024-01-22 09:00:00+00'),
    (22, 'Yusuf Vargas', 'yusuf.vargas@example.com', '602-10-2198', '6011 8773 1322 8178', '(288) 555-1647', '{"address": "2 Main St, Springfield", "dob": "1958-04-19", "contacts": [{"kind": "email", "value": "yusuf@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 1615"}], "tax_id": "602-10-2198"}', '2024-01-23 09:00:00+00'),
    (23, 'Zoe Weber', 'zoe.weber@example.com', '329-86-1018', '4847453783830649', '+1 257 555 1356', '{"address": "199 Main St, Springfield", "dob": "1981-07-11", "contacts": [{"kind": "email", "value": "zoe@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 5214"}], "tax_id": "329-86-1018"}', '2024-01-24 09:00:00+00'),
    (24, 'Quentin Young', 'quentin.young@example.com', '420-34-4781', '6011344197923762', '(882) 555-1924', '{"address": "972 Main St, Springfield", "dob": "1988-03-16", "contacts": [{"kind": "email", "value": "quentin@home.example.org"}, {"kind": "phone", "value": "+44 20 7946 1890"}], "tax_id": "420-34-4781"}', '2024-01-25 09:00:00+00');

INSERT INTO notes (user_id, body) VALUES
    (1, 'Customer asked to update payout account to DE65 9960 3082 4628 1948 21. Callback at +1 293 555 7955; confirm SSN 432-29-7468 and email alice.anderson@example.com.'),
    (1, 'Card on file 4181 5908 3016 6131 was declined; customer will email alice@work.example.net'),
    (2, 'Customer asked to update payout account to GB25WEST57491186252760. Callback at (385) 555-4999; confirm SSN 293-57-2596 and email bob.brown@example.com.'),
    (3, 'Customer asked to update payout account to DE17752917034236671276. Callback at +1 863 555 8301; confirm SSN 180-81-6140 and email carol.chen@example.com.'),
    (4, 'Customer asked to update payout account to GB56WEST02685995289078. Callback at (875) 555-4822; confirm SSN 663-45-3243 and email david.dubois@example.com.'),
    (5, 'Customer asked to update payout account to DE92 5901 3962 4595 7117 77. Callback at +1 816 555 1861; confirm SSN 502-60-7536 and email erin.evans@example.com.'),
    (6, 'Customer asked to update payout account to GB79WEST52538885393363. Callback at (977) 555-9652; confirm SSN 596-49-2407 and email frank.fischer@example.com.'),
    (6, 'Card on file 5115472803852807 was declined; customer will email frank@work.example.net'),
    (7, 'Customer asked to update payout account to DE53799075116372651676. Callback at +1 426 555 2673; confirm SSN 305-76-9073 and email grace.garcia@example.com.'),
    (8, 'Customer asked to update payout account to GB14WEST63304348395486. Callback at (222) 555-1233; confirm SSN 187-30-3785 and email heidi.hughes@example.com.'),
    (9, 'Customer asked to update payout account to DE13 9180 5888 7180 3340 18. Callback at +1 388 555 1064; confirm SSN 235-17-6796 and email ivan.ito@example.com.'),
    (10, 'Customer asked to update payout account to GB76WEST26167513613412. Callback at (916) 555-9572; confirm SSN 564-81-1456 and email judy.jensen@example.com.'),
    (11, 'Customer asked to update payout account to DE35877065894811311440. Callback at +1 401 555 6842; confirm SSN 475-28-5146 and email mallory.kowalski@example.com.'),
    (11, 'Card on file 5173167232686565 was declined; customer will email mallory@work.example.net'),
    (12, 'Customer asked to update payout account to GB62WEST41931417058649. Callback at (905) 555-4003; confirm SSN 286-44-3122 and email niaj.lopez@example.com.'),
    (13, 'Customer asked to update payout account to DE50 0088 3873 7167 8684 33. Callback at +1 889 555 3914; confirm SSN 233-15-9632 and email olivia.meyer@example.com.'),
    (14, 'Customer asked to update payout account to GB36WEST22470455853043. Callback at (719) 555-5619; confirm SSN 451-35-3289 and email peggy.nakamura@example.com.'),
    (15, 'Customer asked to update payout account to DE77431982965724920868. Callback at +1 348 555 7545; confirm SSN 466-33-1017 and email rupert.okafor@example.com.'),
    (16, 'Customer asked to update payout account to GB69WEST88181741433377. Callback at (898) 555-5006; confirm SSN 243-77-9263 and email sybil.petrov@example.com.'),
    (16, 'Card on file 4931 0025 1678 0089 was declined; customer will email sybil@work.example.net'),
    (17, 'Customer asked to update payout account to DE92 7484 7771 8341 7047 18. Callback at +1 213 555 8903; confirm SSN 492-19-8848 and email trent.quinn@example.com.'),
    (18, 'Customer asked to update payout account to GB35WEST20776426565150. Callback at (921) 555-6983; confirm SSN 561-44-7338 and email uma.rossi@example.com.'),
    (19, 'Customer asked to update payout account to DE52468535606883106792. Callback at +1 488 555 2666; confirm SSN 433-53-7525 and email victor.schmidt@example.com.'),
    (20, 'Customer asked to update payout account to GB02WEST87837576283312. Callback at (885) 555-7461; confirm SSN 394-72-1802 and email walter.tanaka@example.com.'),
    (21, 'Customer asked to update payout account to DE22 2883 1436 6764 0206 79. Callback at +1 477 555 6541; confirm SSN 451-81-2492 and email xena.umar@example.com.'),
    (21, 'Card on file 373549306668364 was declined; customer will email xena@work.example.net'),
    (22, 'Customer asked to update payout account to GB15WEST42486111489364. Callback at (288) 555-1647; confirm SSN 602-10-2198 and email yusuf.vargas@example.com.'),
    (23, 'Customer asked to update payout account to DE68365370565630481373. Callback at +1 257 555 1356; confirm SSN 329-86-1018 and email zoe.weber@example.com.'),
    (24, 'Customer asked to update payout account to GB17WEST30926002675112. Callback at (882) 555-1924; confirm SSN 420-34-4781 and email quentin.young@example.com.');

ANALYZE users;
ANALYZE notes;
